package queue_test

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet/packettest"
	"sknock/queue"
)

// TestKnockPrioritySourcesShedLast: with the backlog full of a flood's
// knocks, a knock from a source Priority names (one that earned a grant
// recently) is still queued, in its own lane, and handled before the
// flood's backlog; without Priority it would be shed.
func TestKnockPrioritySourcesShedLast(t *testing.T) {
	returning := netip.MustParseAddr("198.18.0.7")
	started := make(chan netip.Addr, 20)
	release := make(chan struct{})
	k, fake, stop := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Depth: 2, CopyRange: 64,
		Priority: func(src netip.Addr) bool { return src == returning },
		Handle: func(src netip.Addr, _ []byte) {
			started <- src
			<-release
		}})
	flood := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("flood"))
	inject(t, fake, queue.Packet{ID: 1, Data: flood})
	<-started // the worker holds flood knock 1
	for id := uint32(2); id <= 5; id++ {
		inject(t, fake, queue.Packet{ID: id, Data: flood}) // 2 and 3 wait, 4 and 5 are shed
	}
	inject(t, fake, queue.Packet{ID: 6, Data: packettest.UDPPacket(returning, 5000, server4, 20000, []byte("back"))})
	st := k.Stats()
	if q, s, p := st.Queued.Load(), st.Shed.Load(), st.Prioritized.Load(); q != 4 || s != 2 || p != 1 {
		t.Errorf("Queued, Shed, Prioritized = %d, %d, %d, want 4, 2, 1", q, s, p)
	}
	release <- struct{}{} // flood knock 1 done
	select {
	case src := <-started:
		if src != returning {
			t.Errorf("after the knock in hand the worker took one from %s, want the returning client %s first", src, returning)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the next knock")
	}
	close(release)
	<-started
	<-started
	stop()
	if h := st.Handled.Load(); h != 4 {
		t.Errorf("Handled = %d, want 4", h)
	}
}

// TestKnockPriorityLaneIsBounded: a priority source cannot take more than
// its lane and then the common backlog; beyond, its knocks are shed too.
func TestKnockPriorityLaneIsBounded(t *testing.T) {
	started := make(chan struct{}, 20)
	release := make(chan struct{})
	k, fake, _ := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Depth: 2, PriorityDepth: 1, CopyRange: 64,
		Priority: func(netip.Addr) bool { return true },
		Handle: func(netip.Addr, []byte) {
			started <- struct{}{}
			<-release
		}})
	defer close(release)
	knock := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("k"))
	inject(t, fake, queue.Packet{ID: 1, Data: knock})
	<-started
	for id := uint32(2); id <= 7; id++ {
		inject(t, fake, queue.Packet{ID: id, Data: knock})
	}
	st := k.Stats()
	// One in the worker, one in the priority lane, two in the common one.
	if q, s := st.Queued.Load(), st.Shed.Load(); q != 4 || s != 3 {
		t.Errorf("Queued, Shed = %d, %d, want 4, 3", q, s)
	}
}
