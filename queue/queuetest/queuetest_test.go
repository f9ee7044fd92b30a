package queuetest_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"sknock/queue"
	"sknock/queue/queuetest"
)

func TestSocketThroughGate(t *testing.T) {
	fake := queuetest.New()
	g, err := queue.NewGate(queue.GateConfig{Queue: 5, Open: fake.Open, Decide: func(*queue.Header) queue.Verdict { return queue.Reject }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()

	a := netip.MustParseAddr("198.18.0.2")
	id, err := fake.Inject(ctx, queuetest.TCPPacket(a, 1, a, 2, queue.TCPSyn))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Verdicts(), (queuetest.Verdict{ID: id, Verdict: queue.NFRepeat, Mark: 1, WithMark: true}); len(got) != 1 || got[0] != want {
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
