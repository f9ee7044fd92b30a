package queue_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

// deferByPort decides as decideByPort, and defers port 2003.
func deferByPort(d *decideByPort) func(*packet.Header) packet.Verdict {
	return func(h *packet.Header) packet.Verdict {
		if h.DstPort == 2003 {
			return packet.Defer
		}
		return d.decide(h)
	}
}

// TestGateDefersInBatches checks that deferred packets go to the hold
// queue in the same batch verdicts as every other run, so holding never
// costs batching, and are dropped when no hold queue is configured.
func TestGateDefersInBatches(t *testing.T) {
	syn := func(id uint32, dst uint16) queue.Packet {
		return queue.Packet{ID: id, Data: packettest.TCPPacket(client4, uint16(40000+id), server4, dst, packet.TCPSyn)}
	}
	give := []queue.Packet{syn(1, 2003), syn(2, 2003), syn(3, 2000), syn(4, 2003), syn(5, 2000), syn(6, 2000)}
	toHold := queue.QueueTo(102)
	for _, tt := range []struct {
		name    string
		holding bool
		want    []queuetest.Verdict
		stats   [2]uint64 // deferred, dropped
	}{
		{"to the hold queue", true, []queuetest.Verdict{
			{ID: 2, Verdict: toHold, Batch: true},
			{ID: 3, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
			{ID: 4, Verdict: toHold},
			{ID: 6, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true, Batch: true},
		}, [2]uint64{3, 0}},
		{"no hold queue: dropped", false, []queuetest.Verdict{
			{ID: 2, Verdict: queue.NFDrop, Batch: true},
			{ID: 3, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
			{ID: 4, Verdict: queue.NFDrop},
			{ID: 6, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true, Batch: true},
		}, [2]uint64{0, 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var d decideByPort
			g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: deferByPort(&d), HoldQueue: 102, Holding: tt.holding})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := fake.InjectBatch(ctx, give); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, fake.Verdicts()); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			st := g.Stats()
			if got := [2]uint64{st.Deferred.Load(), st.Dropped.Load()}; got != tt.stats {
				t.Errorf("deferred, dropped = %v, want %v", got, tt.stats)
			}
		})
	}
	if _, err := queue.NewGate(queue.GateConfig{Queue: 7, Decide: deferByPort(new(decideByPort)), HoldQueue: 7, Holding: true}); err == nil {
		t.Error("NewGate with the gate queue as hold queue succeeded")
	}
}

// delivered is one packet a HoldReader delivered.
type delivered struct {
	id   uint32
	mark uint32
	hdr  packet.Header
}

// TestHoldReader checks that the hold reader delivers every packet with
// its decoded header and gives each the verdict Settle names, one plain
// message each.
func TestHoldReader(t *testing.T) {
	got := make(chan delivered, 8)
	fake := queuetest.New()
	r, err := queue.NewHold(queue.HoldConfig{
		Queue: 102,
		Open:  fake.Open,
		Deliver: func(_ context.Context, p *queue.Packet, h *packet.Header) {
			hdr := *h
			hdr.Payload = nil
			got <- delivered{p.ID, p.Mark, hdr}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(1, 0, packet.Accept); !errors.Is(err, queue.ErrNotRunning) {
		t.Errorf("Settle before Run = %v, want ErrNotRunning", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	injectCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	var want []delivered
	for i, dst := range []uint16{2000, 2001, 2002, 2003} {
		p := queue.Packet{ID: uint32(10 + i), Mark: 0x100, Data: packettest.TCPPacket(client6, 40000, server6, dst, packet.TCPSyn)}
		if err := fake.InjectPacket(injectCtx, p); err != nil {
			t.Fatal(err)
		}
		want = append(want, delivered{p.ID, p.Mark, packet.Header{Family: 6, Proto: packet.TCP, Src: client6, Dst: server6, SrcPort: 40000, DstPort: dst, TCPFlags: packet.TCPSyn}})
	}
	var gotAll []delivered
	for range want {
		gotAll = append(gotAll, <-got)
	}
	if diff := cmp.Diff(want, gotAll, cmp.AllowUnexported(delivered{}), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	if fake.Verdicts() != nil {
		t.Fatalf("verdicts before Settle: %v", fake.Verdicts())
	}
	for id, v := range map[uint32]packet.Verdict{10: packet.Accept, 11: packet.Drop, 12: packet.Reject, 13: packet.Defer} {
		if err := r.Settle(id, 0x100, v); err != nil {
			t.Fatalf("Settle %d: %v", id, err)
		}
	}
	for id, want := range map[uint32]queuetest.Verdict{
		10: {ID: 10, Verdict: queue.NFRepeat, Mark: 0x100 | queue.DefaultAcceptMark, WithMark: true},
		11: {ID: 11, Verdict: queue.NFDrop},
		12: {ID: 12, Verdict: queue.NFRepeat, Mark: 0x100 | queue.DefaultRejectMark, WithMark: true},
		13: {ID: 13, Verdict: queue.NFDrop},
	} {
		if got, ok := fake.Settled(id); !ok || got != want {
			t.Errorf("packet %d settled %+v (%v), want %+v", id, got, ok, want)
		}
	}
	st := r.Stats()
	if st.Packets.Load() != 4 || st.Accepted.Load() != 1 || st.Dropped.Load() != 2 || st.Rejected.Load() != 1 || st.VerdictMessages.Load() != 4 {
		t.Errorf("stats: packets %d accepted %d dropped %d rejected %d messages %d; want 4 1 2 1 4",
			st.Packets.Load(), st.Accepted.Load(), st.Dropped.Load(), st.Rejected.Load(), st.VerdictMessages.Load())
	}
}

// TestHeldRepeatCaughtAtTheGate: a packet the hold reader repeats to
// grant it that comes back to the gate queue stripped of its signal bit
// (a mark rule above the gate's jump) is accepted there without another
// repeat, and counted.
func TestHeldRepeatCaughtAtTheGate(t *testing.T) {
	repeats := queue.NewRepeats(func() time.Duration { return 0 })
	held := make(chan uint32, 1)
	holdFake := queuetest.New()
	r, err := queue.NewHold(queue.HoldConfig{Queue: 102, Open: holdFake.Open, Repeats: repeats,
		Deliver: func(_ context.Context, p *queue.Packet, _ *packet.Header) { held <- p.ID }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var d decideByPort
	g, gateFake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, Repeats: repeats})
	data := packettest.TCPPacket(client4, 40000, server4, 2000, packet.TCPSyn)
	injectCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if err := holdFake.InjectPacket(injectCtx, queue.Packet{ID: 1, Data: data}); err != nil {
		t.Fatal(err)
	}
	if err := r.Settle(<-held, 0, packet.Accept); err != nil {
		t.Fatal(err)
	}
	inject(t, gateFake, queue.Packet{ID: 5, Data: data})
	want := []queuetest.Verdict{{ID: 5, Verdict: queue.NFAccept}}
	if diff := cmp.Diff(want, gateFake.Verdicts()); diff != "" {
		t.Errorf("gate verdicts (-want +got):\n%s", diff)
	}
	if n := g.Stats().RepeatLoops.Load(); n != 1 {
		t.Errorf("RepeatLoops = %d, want 1", n)
	}
}
