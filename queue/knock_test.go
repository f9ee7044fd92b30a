package queue_test

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

// knockSeen is one call of the knock handler, with the payload copied.
type knockSeen struct {
	Src     netip.Addr
	Payload string
}

// startKnock runs a knock reader over a fake socket until the test ends
// and returns a cancel that stops it and waits for Run.
func startKnock(t *testing.T, cfg queue.KnockConfig) (*queue.KnockReader, *queuetest.Socket, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k, fake, wait := runKnock(t, ctx, cfg)
	stop := func() {
		cancel()
		wait()
	}
	t.Cleanup(stop)
	return k, fake, stop
}

// runKnock runs a knock reader over a fake socket until ctx is done;
// wait waits for Run to return (the first call; later ones return at
// once).
func runKnock(t *testing.T, ctx context.Context, cfg queue.KnockConfig) (k *queue.KnockReader, fake *queuetest.Socket, wait func()) {
	t.Helper()
	fake = queuetest.New()
	cfg.Open = fake.Open
	k, err := queue.NewKnock(cfg)
	if err != nil {
		t.Fatalf("NewKnock: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	var once sync.Once
	wait = func() {
		once.Do(func() {
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	return k, fake, wait
}

func TestKnockDelivers(t *testing.T) {
	seen := make(chan knockSeen, 10)
	k, fake, stop := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 2, Handle: func(src netip.Addr, payload []byte) {
		seen <- knockSeen{src, string(payload)}
	}})
	inject(t, fake, queue.Packet{ID: 1, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("knock-v4"))})
	inject(t, fake, queue.Packet{ID: 2, Data: packettest.UDPPacket(client6, 5000, server6, 20000, []byte("knock-v6"))})
	inject(t, fake, queue.Packet{ID: 3, Data: packettest.TCPPacket(client4, 5000, server4, 20000, packet.TCPSyn)})
	inject(t, fake, queue.Packet{ID: 4, Data: []byte{0x45}})
	inject(t, fake, queue.Packet{ID: 5, Truncated: true, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("cut"))})

	var got []knockSeen
	for range 2 {
		select {
		case s := <-seen:
			got = append(got, s)
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for the knocks")
		}
	}
	if got[0].Src.Is6() {
		got[0], got[1] = got[1], got[0] // two workers: either order
	}
	want := []knockSeen{{client4, "knock-v4"}, {client6, "knock-v6"}}
	if diff := cmp.Diff(want, got, headerOpts...); diff != "" {
		t.Errorf("knocks handled (-want +got):\n%s", diff)
	}
	var wantVerdicts []queuetest.Verdict
	for id := range uint32(5) {
		wantVerdicts = append(wantVerdicts, queuetest.Verdict{ID: id + 1, Verdict: queue.NFDrop, Batch: true})
	}
	if diff := cmp.Diff(wantVerdicts, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	stop() // both knocks are in Handle: Run returns after they are counted
	st := k.Stats()
	if h := st.Handled.Load(); h != 2 {
		t.Errorf("Handled = %d, want 2", h)
	}
	if r, q, u, tr := st.Received.Load(), st.Queued.Load(), st.Unknown.Load(), st.Truncated.Load(); r != 5 || q != 2 || u != 2 || tr != 1 {
		t.Errorf("Received, Queued, Unknown, Truncated = %d, %d, %d, %d, want 5, 2, 2, 1", r, q, u, tr)
	}
}

// TestKnockDropsAReceiveWithOneVerdict: the knocks of one receive, good
// and bad, are all dropped by one batch verdict for the last id, sent after
// every payload was copied.
func TestKnockDropsAReceiveWithOneVerdict(t *testing.T) {
	seen := make(chan knockSeen, 10)
	k, fake, _ := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Handle: func(src netip.Addr, payload []byte) {
		seen <- knockSeen{src, string(payload)}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := fake.InjectBatch(ctx, []queue.Packet{
		{ID: 7, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("one"))},
		{ID: 8, Data: []byte{0x45}},
		{ID: 9, Data: packettest.UDPPacket(client6, 5000, server6, 20000, []byte("two"))},
		{ID: 10, Truncated: true, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("cut"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []queuetest.Verdict{{ID: 10, Verdict: queue.NFDrop, Batch: true}}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdict messages (-want +got):\n%s", diff)
	}
	if w := fake.Waiting(); len(w) != 0 {
		t.Errorf("packets %v still waiting in the kernel", w)
	}
	for _, payload := range []string{"one", "two"} {
		select {
		case s := <-seen:
			if s.Payload != payload {
				t.Errorf("handled %q, want %q", s.Payload, payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for knock %q", payload)
		}
	}
	if r := k.Stats().Received.Load(); r != 4 {
		t.Errorf("Received = %d, want 4", r)
	}
}

// TestKnockRefusedBatchVerdictIsCounted: a verdict the socket refuses is
// counted once per message, and the knocks are still handled.
func TestKnockRefusedBatchVerdictIsCounted(t *testing.T) {
	handled := make(chan struct{}, 10)
	k, fake, _ := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Handle: func(netip.Addr, []byte) { handled <- struct{}{} }})
	fake.FailVerdicts(errors.New("ENOBUFS"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	knock := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("k"))
	if err := fake.InjectBatch(ctx, []queue.Packet{{ID: 1, Data: knock}, {ID: 2, Data: knock}}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-handled:
		case <-time.After(5 * time.Second):
			t.Fatal("timed out waiting for the knocks")
		}
	}
	if n := k.Stats().VerdictErrors.Load(); n != 1 {
		t.Errorf("VerdictErrors = %d, want 1 (one refused batch message)", n)
	}
}

func TestKnockShedsWhenWorkersAreBehind(t *testing.T) {
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	k, fake, stop := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Depth: 2, CopyRange: 64,
		Handle: func(netip.Addr, []byte) {
			started <- struct{}{}
			<-release
		}})
	knock := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("k"))
	inject(t, fake, queue.Packet{ID: 1, Data: knock})
	<-started // the worker holds knock 1
	for id := uint32(2); id <= 5; id++ {
		inject(t, fake, queue.Packet{ID: id, Data: knock})
	}
	st := k.Stats()
	if q, s := st.Queued.Load(), st.Shed.Load(); q != 3 || s != 2 {
		t.Errorf("Queued, Shed = %d, %d, want 3, 2 (one in the worker, Depth 2 waiting)", q, s)
	}
	if n := len(fake.Verdicts()); n != 5 {
		t.Errorf("%d verdicts, want 5: shed knocks are dropped too", n)
	}
	close(release)
	<-started // knock 2
	<-started // knock 3: Handle has them all, and stop waits for the last
	stop()
	if h := st.Handled.Load(); h != 3 {
		t.Errorf("Handled = %d, want 3", h)
	}
	if free, want := queue.FreeBuffers(k), 2+1+1; free != want {
		t.Errorf("%d free buffers after Run, want all %d back", free, want)
	}
}

func TestKnockBuffersReused(t *testing.T) {
	var got []string
	k, err := queue.NewKnock(queue.KnockConfig{Workers: 1, Depth: 1, CopyRange: 128, Handle: func(_ netip.Addr, payload []byte) {
		got = append(got, string(payload))
	}})
	if err != nil {
		t.Fatal(err)
	}
	var sock discardSocket
	var want []string
	// Many more knocks than buffers, of changing lengths: each must see
	// its own bytes, not a leftover of an earlier one.
	for i := range 20 {
		payload := bytes.Repeat([]byte{byte('a' + i)}, 20-i)
		want = append(want, string(payload))
		queue.HandleKnockPacket(k, &sock, queue.Packet{ID: uint32(i), Data: packettest.UDPPacket(client4, 1, server4, 20000, payload)})
		if !queue.ProcessOneKnock(k) {
			t.Fatalf("knock %d not queued", i)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("payloads handled (-want +got):\n%s", diff)
	}
	if free := queue.FreeBuffers(k); free != 3 {
		t.Errorf("%d free buffers, want 3", free)
	}
}

func TestKnockAllocs(t *testing.T) {
	for _, reject := range []bool{false, true} {
		k, err := queue.NewKnock(queue.KnockConfig{Workers: 1, Depth: 4, Reject: reject, Handle: func(netip.Addr, []byte) {}})
		if err != nil {
			t.Fatal(err)
		}
		var sock discardSocket
		p := queue.Packet{ID: 1, Data: packettest.UDPPacket(client6, 1, server6, 20000, make([]byte, 700))}
		n := testing.AllocsPerRun(100, func() {
			queue.HandleKnockPacket(k, &sock, p)
			queue.ProcessOneKnock(k)
		})
		if n != 0 {
			t.Errorf("Reject %v: %v allocations per knock, want 0", reject, n)
		}
	}
}

func TestNewKnockChecksConfig(t *testing.T) {
	handle := func(netip.Addr, []byte) {}
	for _, cfg := range []queue.KnockConfig{{}, {Handle: handle, Workers: -1}, {Handle: handle, Depth: -1}} {
		if _, err := queue.NewKnock(cfg); err == nil {
			t.Errorf("NewKnock(%+v) succeeded", cfg)
		}
	}
}

func BenchmarkKnockHandle(b *testing.B) {
	k, err := queue.NewKnock(queue.KnockConfig{Workers: 1, Depth: 4, Handle: func(netip.Addr, []byte) {}})
	if err != nil {
		b.Fatal(err)
	}
	var sock discardSocket
	p := queue.Packet{ID: 1, Data: packettest.UDPPacket(client4, 1, server4, 20000, make([]byte, 700))}
	b.ReportAllocs()
	for b.Loop() {
		queue.HandleKnockPacket(k, &sock, p)
		queue.ProcessOneKnock(k)
	}
}

// TestKnockQueuedPairs: every knock announced with Queued is followed by
// Handle, or by Unhandled when it is left at the end of Run; shed knocks
// are never announced.
func TestKnockQueuedPairs(t *testing.T) {
	var mu sync.Mutex
	counts := map[string]int{}
	note := func(what string) {
		mu.Lock()
		counts[what]++
		mu.Unlock()
	}
	started := make(chan struct{}, 10)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	ctx, cancel := context.WithCancel(context.Background())
	k, fake, wait := runKnock(t, ctx, queue.KnockConfig{Queue: 100, Workers: 1, Depth: 1,
		Queued:    func(netip.Addr) { note("queued") },
		Unhandled: func(netip.Addr) { note("unhandled") },
		Handle: func(netip.Addr, []byte) {
			note("handled")
			started <- struct{}{}
			<-release
		}})
	t.Cleanup(func() { cancel(); unblock(); wait() })
	knock := packettest.UDPPacket(client4, 5000, server4, 20000, []byte("k"))
	inject(t, fake, queue.Packet{ID: 1, Data: knock})
	<-started // the worker holds knock 1
	for id := uint32(2); id <= 4; id++ {
		inject(t, fake, queue.Packet{ID: id, Data: knock}) // 2 waits, 3 and 4 are shed
	}
	// Stop while the worker still holds knock 1, then let it go: knock 2
	// is handled or left unhandled, whichever the worker picks first.
	cancel()
	unblock()
	wait()
	mu.Lock()
	defer mu.Unlock()
	if counts["queued"] != 2 || counts["handled"]+counts["unhandled"] != 2 {
		t.Errorf("queued %d, handled %d, unhandled %d; want 2 queued (2 shed), each handled or unhandled once",
			counts["queued"], counts["handled"], counts["unhandled"])
	}
	if s := k.Stats().Shed.Load(); s != 2 {
		t.Errorf("Shed = %d, want 2", s)
	}
}

func TestNewKnockQueuedNeedsUnhandled(t *testing.T) {
	if _, err := queue.NewKnock(queue.KnockConfig{Handle: func(netip.Addr, []byte) {}, Queued: func(netip.Addr) {}}); err == nil {
		t.Error("NewKnock accepted Queued without Unhandled")
	}
}

// TestKnockRejectAnswersAsAClosedPort: with Reject, every packet of a
// receive, knock or not, is repeated with the reject mark ORed into its
// own (which the rules REJECT as a closed port), after its payload was
// copied; one batch verdict a run of equal marks, and a packet that
// already carried the reject bit is dropped instead of looping.
func TestKnockRejectAnswersAsAClosedPort(t *testing.T) {
	seen := make(chan knockSeen, 10)
	k, fake, _ := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Reject: true, RejectMark: 0x40,
		Handle: func(src netip.Addr, payload []byte) { seen <- knockSeen{src, string(payload)} }})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := fake.InjectBatch(ctx, []queue.Packet{
		{ID: 1, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("one"))},
		{ID: 2, Data: []byte{0x45}},
		{ID: 3, Data: packettest.UDPPacket(client6, 5000, server6, 20000, []byte("two"))},
		{ID: 4, Mark: 0x2, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("three"))},
		{ID: 5, Mark: 0x40, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("looped"))},
		{ID: 6, Truncated: true, Data: packettest.UDPPacket(client4, 5000, server4, 20000, []byte("cut"))},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []queuetest.Verdict{
		{ID: 3, Verdict: queue.NFRepeat, Mark: 0x40, WithMark: true, Batch: true},
		{ID: 4, Verdict: queue.NFRepeat, Mark: 0x42, WithMark: true, Batch: true},
		{ID: 5, Verdict: queue.NFDrop, Batch: true},
		{ID: 6, Verdict: queue.NFRepeat, Mark: 0x40, WithMark: true, Batch: true},
	}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdict messages (-want +got):\n%s", diff)
	}
	if w := fake.Waiting(); len(w) != 0 {
		t.Errorf("packets %v still waiting in the kernel", w)
	}
	for _, payload := range []string{"one", "two", "three", "looped"} {
		select {
		case s := <-seen:
			if s.Payload != payload {
				t.Errorf("handled %q, want %q", s.Payload, payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timed out waiting for knock %q", payload)
		}
	}
	st := k.Stats()
	if r, l := st.Rejected.Load(), st.RejectLoops.Load(); r != 5 || l != 1 {
		t.Errorf("Rejected, RejectLoops = %d, %d, want 5, 1", r, l)
	}
}

// TestKnockSetRejectWhileRunning: SetReject switches a running reader
// between dropping knocks and rejecting them, from the next receive on.
func TestKnockSetRejectWhileRunning(t *testing.T) {
	k, fake, _ := startKnock(t, queue.KnockConfig{Queue: 100, Workers: 1, Handle: func(netip.Addr, []byte) {}})
	drop := queuetest.Verdict{Verdict: queue.NFDrop, Batch: true}
	reject := queuetest.Verdict{Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true, Batch: true}
	var want []queuetest.Verdict
	for id, rejecting := range []bool{false, true, true, false, true} {
		k.SetReject(rejecting)
		if k.Rejecting() != rejecting {
			t.Fatalf("Rejecting() = %v after SetReject(%v)", !rejecting, rejecting)
		}
		// Each its own datagram: the same one again right after its
		// repeat would be taken for a loop.
		knock := packettest.UDPPacket(client4, uint16(5000+id), server4, 20000, []byte("k"))
		inject(t, fake, queue.Packet{ID: uint32(id + 1), Data: knock})
		v := drop
		if rejecting {
			v = reject
		}
		v.ID = uint32(id + 1)
		want = append(want, v)
	}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}
