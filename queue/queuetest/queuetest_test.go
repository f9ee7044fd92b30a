package queuetest_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

func TestSocketThroughGate(t *testing.T) {
	fake := queuetest.New()
	g, err := queue.NewGate(queue.GateConfig{Queue: 5, Open: fake.Open, Decide: func(*packet.Header) packet.Verdict { return packet.Reject }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	a := netip.MustParseAddr("198.18.0.2")
	id, err := fake.Inject(ctx, packettest.TCPPacket(a, 1, a, 2, packet.TCPSyn))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Verdicts(), (queuetest.Verdict{ID: id, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true}); len(got) != 1 || got[0] != want {
		t.Errorf("verdicts = %+v, want [%+v]", got, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := fake.Inject(context.Background(), nil); !errors.Is(err, queuetest.ErrClosed) {
		t.Errorf("Inject after Run = %v, want ErrClosed", err)
	}
}

// TestSocketBatchModel checks the fake's model of the kernel queue: a
// batch verdict settles every waiting packet up to its id, a plain one
// only its own, and a refused one nothing.
func TestSocketBatchModel(t *testing.T) {
	fake := queuetest.New()
	fake.Open(queue.SocketConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go fake.Serve(ctx, func([]queue.Packet) {}, func(error) {})
	if err := fake.InjectBatch(ctx, []queue.Packet{{ID: 1}, {ID: 2}, {ID: 3}, {ID: 4}}); err != nil {
		t.Fatal(err)
	}
	fake.FailVerdicts(errors.New("refused"))
	fake.SetVerdictBatch(4, queue.NFAccept, 0, false)
	fake.FailVerdicts(nil)
	fake.SetVerdict(3, queue.NFDrop)
	fake.SetVerdictBatch(2, queue.NFRepeat, 1, true)
	if got := fake.Waiting(); len(got) != 1 || got[0] != 4 {
		t.Errorf("Waiting = %v, want [4]", got)
	}
	want := queuetest.Verdict{ID: 2, Verdict: queue.NFRepeat, Mark: 1, WithMark: true, Batch: true}
	if got, ok := fake.Settled(1); !ok || got != want {
		t.Errorf("Settled(1) = %+v, %v; want %+v", got, ok, want)
	}
	if got, ok := fake.Settled(3); !ok || got.Verdict != queue.NFDrop || got.Batch {
		t.Errorf("Settled(3) = %+v, %v; want a plain drop", got, ok)
	}
	if _, ok := fake.Settled(4); ok {
		t.Error("packet 4 settled by a refused verdict")
	}
}
