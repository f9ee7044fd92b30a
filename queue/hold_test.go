package queue_test

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/queue"
	"sknock/queue/queuetest"
)

// knockSim decides as sknockd's engine does, for the hold tests: a source
// with a grant is accepted; one with a knock being decided is held; the
// rest are dropped. holdAnswers, when set, overrides Hold's answers in
// order (to test the second ask under the lock).
type knockSim struct {
	mu          sync.Mutex
	pending     map[netip.Addr]bool
	granted     map[netip.Addr]bool
	holdAnswers []bool
	now         time.Time
}

func newKnockSim() *knockSim {
	return &knockSim{pending: map[netip.Addr]bool{}, granted: map[netip.Addr]bool{}, now: time.Unix(1_700_000_000, 0)}
}

func (k *knockSim) hold(h *queue.Header) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.holdAnswers) > 0 {
		a := k.holdAnswers[0]
		k.holdAnswers = k.holdAnswers[1:]
		return a
	}
	return k.pending[h.Src] && !k.granted[h.Src]
}

func (k *knockSim) decide(h *queue.Header) queue.Verdict {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.granted[h.Src] {
		return queue.Accept
	}
	return queue.Drop
}

func (k *knockSim) clock() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.now
}

func (k *knockSim) set(f func(k *knockSim)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	f(k)
}

var other4 = netip.MustParseAddr("198.18.0.3")

func synFrom(id uint32, src netip.Addr) queue.Packet {
	return queue.Packet{ID: id, Data: queuetest.TCPPacket(src, 40000, server4, 2000, queue.TCPSyn)}
}

func injectBatch(t *testing.T, fake *queuetest.Socket, pkts ...queue.Packet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fake.InjectBatch(ctx, pkts); err != nil {
		t.Fatal(err)
	}
}

func startHoldGate(t *testing.T, k *knockSim, maxHeld int) (*queue.GateReader, *queuetest.Socket) {
	return startGate(t, queue.GateConfig{Queue: 101, Decide: k.decide, Hold: k.hold, MaxHeld: maxHeld, HoldTimeout: 5 * time.Millisecond, Clock: k.clock})
}

// TestGateHoldsUntilRelease: a SYN from a source whose knock is being
// decided gets no verdict; packets after it are answered one by one (a
// batch would settle the held one); Release after the grant accepts it.
func TestGateHoldsUntilRelease(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startHoldGate(t, k, 0)
	injectBatch(t, fake, synFrom(1, other4), synFrom(2, client4), synFrom(3, other4), synFrom(4, other4))
	drop := func(id uint32, batch bool) queuetest.Verdict {
		return queuetest.Verdict{ID: id, Verdict: queue.NFDrop, Batch: batch}
	}
	want := []queuetest.Verdict{drop(1, false), drop(3, false), drop(4, false)}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Fatalf("verdicts while holding (-want +got):\n%s", diff)
	}
	if w := fake.Waiting(); len(w) != 1 || w[0] != 2 {
		t.Fatalf("waiting %v, want only the held packet 2", w)
	}

	g.Release(other4) // another source's knock: packet 2 stays held
	if n := queue.HeldCount(g); n != 1 {
		t.Fatalf("%d held after releasing another source, want 1", n)
	}
	k.set(func(k *knockSim) { k.granted[client4], k.pending[client4] = true, false })
	g.Release(client4)
	want = append(want, queuetest.Verdict{ID: 2, Verdict: queue.NFAccept})
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Fatalf("verdicts after release (-want +got):\n%s", diff)
	}
	if n := queue.HeldCount(g); n != 0 {
		t.Errorf("%d still held", n)
	}

	// Nothing held: runs go out as batches again.
	injectBatch(t, fake, synFrom(5, other4), synFrom(6, other4))
	if got := fake.Verdicts(); got[len(got)-1] != drop(6, true) {
		t.Errorf("last verdict %+v, want a batch drop for 6", got[len(got)-1])
	}
	st := g.Stats()
	if p, a, d, h := st.Packets.Load(), st.Accepted.Load(), st.Dropped.Load(), st.Held.Load(); p != 6 || a != 1 || d != 5 || h != 1 {
		t.Errorf("Packets, Accepted, Dropped, Held = %d, %d, %d, %d; want 6, 1, 5, 1", p, a, d, h)
	}
}

// TestGateHoldTimesOut: a held packet whose knock is never released is
// decided by Decide at its deadline, and counted as a timeout.
func TestGateHoldTimesOut(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startHoldGate(t, k, 0)
	injectBatch(t, fake, synFrom(1, client4))
	queue.ExpireHeld(g) // not yet due
	if n := queue.HeldCount(g); n != 1 {
		t.Fatalf("%d held before the deadline, want 1", n)
	}
	k.set(func(k *knockSim) { k.now = k.now.Add(5 * time.Millisecond) })
	queue.ExpireHeld(g)
	if diff := cmp.Diff([]queuetest.Verdict{{ID: 1, Verdict: queue.NFDrop}}, fake.Verdicts()); diff != "" {
		t.Fatalf("verdicts after the deadline (-want +got):\n%s", diff)
	}
	if n := g.Stats().HoldTimeouts.Load(); n != 1 {
		t.Errorf("HoldTimeouts = %d, want 1", n)
	}
}

// TestGateHoldTimerFires: the real timer settles a held packet on its own.
func TestGateHoldTimerFires(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: k.decide, Hold: k.hold, HoldTimeout: time.Millisecond})
	injectBatch(t, fake, synFrom(1, client4))
	waitFor(t, "the held packet's timeout", func() bool { return queue.HeldCount(g) == 0 })
	if diff := cmp.Diff([]queuetest.Verdict{{ID: 1, Verdict: queue.NFDrop}}, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

// TestGateHoldIsBounded: beyond MaxHeld, packets are decided at once.
func TestGateHoldIsBounded(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startHoldGate(t, k, 2)
	injectBatch(t, fake, synFrom(1, client4), synFrom(2, client4), synFrom(3, client4))
	if n := queue.HeldCount(g); n != 2 {
		t.Fatalf("%d held, want MaxHeld 2", n)
	}
	if diff := cmp.Diff([]queuetest.Verdict{{ID: 3, Verdict: queue.NFDrop}}, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

// TestGateHoldAskedAgainUnderLock: when the knock was decided between the
// first Hold and the hold list's lock, the packet is decided at once
// instead of waiting for a Release that already happened.
func TestGateHoldAskedAgainUnderLock(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.holdAnswers = []bool{true, false}; k.granted[client4] = true })
	g, fake := startHoldGate(t, k, 0)
	injectBatch(t, fake, synFrom(1, client4))
	if n := queue.HeldCount(g); n != 0 {
		t.Fatalf("%d held, want 0", n)
	}
	if diff := cmp.Diff([]queuetest.Verdict{{ID: 1, Verdict: queue.NFAccept}}, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}

// TestGateReleaseConcurrent releases from other goroutines while packets
// arrive (run with -race): every packet gets exactly one verdict.
func TestGateReleaseConcurrent(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startHoldGate(t, k, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				g.Release(client4)
			}
		}
	})
	const n = 200
	for id := uint32(1); id <= n; id += 2 {
		injectBatch(t, fake, synFrom(id, client4), synFrom(id+1, other4))
	}
	close(stop)
	wg.Wait()
	k.set(func(k *knockSim) { k.pending[client4] = false })
	g.Release(client4)
	seen := map[uint32]int{}
	for _, v := range fake.Verdicts() {
		if v.Batch {
			t.Errorf("batch verdict %+v while packets may be held", v)
		}
		seen[v.ID]++
	}
	for id := uint32(1); id <= n; id++ {
		if seen[id] != 1 {
			t.Errorf("packet %d got %d verdicts, want 1", id, seen[id])
		}
	}
}

// TestGateHoldAllocs: holding and releasing allocate nothing.
func TestGateHoldAllocs(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, err := queue.NewGate(queue.GateConfig{Queue: 101, Decide: k.decide, Hold: k.hold, Clock: k.clock})
	if err != nil {
		t.Fatal(err)
	}
	var sock discardSocket
	p := synFrom(1, client4)
	queue.HandleGateBatch(g, &sock, []queue.Packet{p})
	n := testing.AllocsPerRun(100, func() {
		queue.HandleGateBatch(g, &sock, []queue.Packet{p})
		g.Release(client4)
	})
	if n != 0 {
		t.Errorf("%v allocations per hold and release, want 0", n)
	}
}

// TestGateReleaseDuringSecondAsk: the knock is decided, and its Release
// called, while the reader is between the second Hold (which still saw the
// knock pending) and storing the packet. The Release must wait for the
// lock and settle the packet, not leave it to the timeout.
func TestGateReleaseDuringSecondAsk(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	var g *queue.GateReader
	var calls atomic.Int32
	released := make(chan struct{})
	hold := func(h *queue.Header) bool {
		ans := k.hold(h)
		if calls.Add(1) == 2 { // the ask under the hold list's lock
			k.set(func(k *knockSim) { k.granted[client4], k.pending[client4] = true, false })
			go func() { g.Release(client4); close(released) }()
			time.Sleep(20 * time.Millisecond) // let Release reach the lock
		}
		return ans
	}
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: k.decide, Hold: hold, HoldTimeout: time.Hour})
	injectBatch(t, fake, synFrom(1, client4))
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Release did not return")
	}
	v, ok := fake.Settled(1)
	if !ok || v.Verdict != queue.NFAccept {
		t.Errorf("packet 1: settled %v, verdict %+v; want accepted by the Release", ok, v)
	}
	if n := queue.HeldCount(g); n != 0 {
		t.Errorf("%d still held", n)
	}
}

// TestGateReleaseKeepsPacketsOfAnotherPendingKnock: a source knocked for
// two ports; when the first knock is decided, a SYN held for the second
// port stays held (Hold still says so) until its own knock is decided.
func TestGateReleaseKeepsPacketsOfAnotherPendingKnock(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4] = true })
	g, fake := startHoldGate(t, k, 0)
	injectBatch(t, fake, synFrom(1, client4))
	g.Release(client4) // the first knock; the second is still pending
	if _, ok := fake.Settled(1); ok {
		t.Fatal("held packet decided while its own knock is still pending")
	}
	k.set(func(k *knockSim) { k.granted[client4], k.pending[client4] = true, false })
	g.Release(client4)
	if v, ok := fake.Settled(1); !ok || v.Verdict != queue.NFAccept {
		t.Errorf("after the second knock: settled %v, %+v; want accepted", ok, v)
	}
}

// TestGateHoldsAtMostFourPerSource: one source cannot take every slot.
func TestGateHoldsAtMostFourPerSource(t *testing.T) {
	k := newKnockSim()
	k.set(func(k *knockSim) { k.pending[client4], k.pending[other4] = true, true })
	g, fake := startHoldGate(t, k, 0)
	injectBatch(t, fake, synFrom(1, client4), synFrom(2, client4), synFrom(3, client4), synFrom(4, client4), synFrom(5, client4), synFrom(6, other4))
	if n := queue.HeldCount(g); n != 5 {
		t.Errorf("%d held, want 4 from one source and 1 from the other", n)
	}
	if diff := cmp.Diff([]queuetest.Verdict{{ID: 5, Verdict: queue.NFDrop}}, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}
