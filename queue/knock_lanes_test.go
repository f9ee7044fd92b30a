package queue_test

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet/packettest"
	"sknock/queue"
)

// classifyByFirstByte is a Classify for tests: payloads starting with 'f'
// are fast, with 'x' decided at once, the rest common.
func classifyByFirstByte(p []byte) (atOnce, fast bool) {
	return len(p) > 0 && p[0] == 'x', len(p) > 0 && p[0] == 'f'
}

// TestKnockFastLaneAheadOfCommon: with the common lane full of a flood's
// knocks, a fast knock is still queued in its own lane and handled
// before the flood's backlog; a knock to decide at once is handled on
// the receive goroutine without waiting for a worker.
func TestKnockFastLaneAheadOfCommon(t *testing.T) {
	started := make(chan string, 20)
	release := make(chan struct{})
	k, fake, stop := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Depth: 2, CopyRange: 64,
		Classify: classifyByFirstByte,
		Handle: func(_ netip.Addr, p []byte) {
			started <- string(p)
			if p[0] != 'x' {
				<-release
			}
		}})
	flood := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("v1 flood"))
	inject(t, fake, queue.Packet{ID: 1, Data: flood})
	<-started // the worker holds flood knock 1
	for id := uint32(2); id <= 5; id++ {
		inject(t, fake, queue.Packet{ID: id, Data: flood}) // 2 and 3 wait, 4 and 5 are shed
	}
	inject(t, fake, queue.Packet{ID: 6, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("xbad mac1"))})
	select {
	case p := <-started:
		if p != "xbad mac1" {
			t.Fatalf("handled %q, want the at-once knock", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the at-once knock waited for the busy worker")
	}
	inject(t, fake, queue.Packet{ID: 7, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("fast v2"))})
	st := k.Stats()
	if q, s, f, a := st.Queued.Load(), st.Shed.Load(), st.Fast.Load(), st.AtOnce.Load(); q != 5 || s != 2 || f != 1 || a != 1 {
		t.Errorf("Queued, Shed, Fast, AtOnce = %d, %d, %d, %d, want 5, 2, 1, 1", q, s, f, a)
	}
	release <- struct{}{} // flood knock 1 done
	select {
	case p := <-started:
		if p != "fast v2" {
			t.Errorf("after the knock in hand the worker took %q, want the fast knock first", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for the next knock")
	}
	close(release)
	<-started
	<-started
	stop()
	if h := st.Handled.Load(); h != 5 {
		t.Errorf("Handled = %d, want 5", h)
	}
}

// TestKnockLaneOrder: the workers empty the lanes in order: priority
// fast, fast, priority common, common.
func TestKnockLaneOrder(t *testing.T) {
	returning := netip.MustParseAddr("198.18.0.7")
	var got []string
	k, err := queue.NewKnock(queue.KnockConfig{Workers: 1, Depth: 4, CopyRange: 64,
		Classify: classifyByFirstByte,
		Priority: func(src netip.Addr) bool { return src == returning },
		Handle:   func(_ netip.Addr, p []byte) { got = append(got, string(p)) }})
	if err != nil {
		t.Fatal(err)
	}
	var sock discardSocket
	for i, give := range []struct {
		src     netip.Addr
		payload string
	}{{client4, "common"}, {returning, "prio common"}, {client4, "fast"}, {returning, "fprio fast"}} {
		queue.HandleKnockPacket(k, &sock, queue.Packet{ID: uint32(i + 1), Data: packettest.UDPPacket(give.src, 5000, server4, 20000, []byte(give.payload))})
	}
	for queue.ProcessOneKnock(k) {
	}
	want := []string{"fprio fast", "fast", "prio common", "common"}
	if len(got) != len(want) {
		t.Fatalf("handled %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("handled %q, want %q", got, want)
		}
	}
}

// TestKnockAtOnceHook: with AtOnce set, the knocks to decide at once go
// to it, not to Handle, and are counted as handled.
func TestKnockAtOnceHook(t *testing.T) {
	var handled, atOnce []string
	k, err := queue.NewKnock(queue.KnockConfig{Workers: 1, Depth: 4, CopyRange: 64,
		Classify: classifyByFirstByte,
		Handle:   func(_ netip.Addr, p []byte) { handled = append(handled, string(p)) },
		AtOnce:   func(_ netip.Addr, p []byte) { atOnce = append(atOnce, string(p)) }})
	if err != nil {
		t.Fatal(err)
	}
	var sock discardSocket
	for i, p := range []string{"xbad", "fast", "common"} {
		queue.HandleKnockPacket(k, &sock, queue.Packet{ID: uint32(i + 1), Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte(p))})
	}
	for queue.ProcessOneKnock(k) {
	}
	if len(atOnce) != 1 || atOnce[0] != "xbad" || len(handled) != 2 || k.Stats().Handled.Load() != 3 {
		t.Errorf("AtOnce got %q, Handle %q, Handled %d; want xbad, then the other two, 3", atOnce, handled, k.Stats().Handled.Load())
	}
}
