package gate

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// settled is one verdict a Holder gave.
type settled struct {
	id uint32
	v  packet.Verdict
}

// holderEnv is an engine with a Holder running on a fake clock; its
// verdicts arrive on out.
type holderEnv struct {
	p     *testPKI
	clock *fakeClock
	e     *Engine
	h     *Holder
	out   chan settled
}

func newHolderEnv(t *testing.T, cfg HolderConfig) *holderEnv {
	t.Helper()
	env := &holderEnv{
		p:     newTestPKI(t, map[string]string{"alice": "tcp/2000,tcp/3000"}),
		clock: &fakeClock{now: time.Now().Truncate(time.Second)},
		out:   make(chan settled, 256),
	}
	env.e = NewEngine(Config{Clock: env.clock.Now, Policy: PolicyReject}, env.p.trust(t))
	cfg.Settle = func(p *HeldPacket, v packet.Verdict) { env.out <- settled{p.ID, v} }
	var err error
	if env.h, err = env.e.NewHolder(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { env.h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return env
}

// hold hands the Holder a packet from src to tcp/port with id, as the
// hold queue's reader does.
func (env *holderEnv) hold(src netip.Addr, port uint16, id uint32) {
	env.h.Hold(context.Background(), HeldPacket{ID: id, Header: header(src, packet.TCP, port)})
}

// send is a packet's whole path: the gate's verdict, and when it is
// Defer, the Holder. It returns the gate's verdict.
func (env *holderEnv) send(t *testing.T, src netip.Addr, port uint16, id uint32) packet.Verdict {
	t.Helper()
	h := header(src, packet.TCP, port)
	v, _ := env.e.Verdict(&h, env.clock.Now())
	if v == packet.Defer {
		env.hold(src, port, id)
	}
	return v
}

// want waits for the next verdict and checks it.
func (env *holderEnv) want(t *testing.T, id uint32, v packet.Verdict) {
	t.Helper()
	select {
	case got := <-env.out:
		if got != (settled{id, v}) {
			t.Errorf("settled %d as %v, want %d as %v", got.id, got.v, id, v)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("packet %d never settled (want %v)", id, v)
	}
}

// wantNone checks that nothing is settled by the time Run has taken a
// probe packet, sent after the others, and settled it.
func (env *holderEnv) wantNone(t *testing.T) {
	t.Helper()
	probe := netip.MustParseAddr("198.18.9.9") // no knock pending: settled at once
	env.hold(probe, 2000, 9999)
	env.want(t, 9999, packet.Reject)
}

func (env *holderEnv) knock(t *testing.T, src netip.Addr, port uint16) {
	t.Helper()
	if d := env.e.Knock(src, env.p.seal(t, "alice", packet.TCP, port, src.String(), env.clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
}

// TestVerdictDefersWhileAKnockIsPending: between KnockQueued and Knock, a
// packet of the knocking source without a grant is deferred (only when a
// Holder exists, and never under policy none); afterwards it is not.
func TestVerdictDefersWhileAKnockIsPending(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{})
	e := env.e
	alice := netip.MustParseAddr("198.18.0.2")
	other := netip.MustParseAddr("198.18.0.3")
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Reject {
		t.Fatalf("no knock pending: %v, want reject", v)
	}
	e.KnockQueued(alice)
	for _, tt := range []struct {
		name  string
		src   netip.Addr
		proto packet.Proto
		want  packet.Verdict
	}{
		{"pending source", alice, packet.TCP, packet.Defer},
		{"pending source, udp", alice, packet.UDP, packet.Defer},
		{"other source", other, packet.TCP, packet.Reject},
		{"unknown protocol", alice, 1, packet.Drop},
	} {
		if got := verdictOf(e, tt.src, tt.proto, 2000); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	e.Reconfigure(PolicyNone, 0)
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Accept {
		t.Errorf("policy none, knock pending: %v, want accept (audit, not deferred)", v)
	}
	e.Reconfigure(PolicyReject, 0)
	env.knock(t, alice, 2000)
	if v := verdictOf(e, alice, packet.TCP, 2001); v != packet.Reject {
		t.Errorf("after the knock was decided: %v, want reject", v)
	}
	if s := e.Snapshot(); s.Deferred != 2 {
		t.Errorf("Deferred = %d, want 2", s.Deferred)
	}

	// Without a Holder nothing is deferred.
	bare := NewEngine(Config{Policy: PolicyReject}, nil)
	bare.KnockQueued(alice)
	if v := verdictOf(bare, alice, packet.TCP, 2000); v != packet.Reject {
		t.Errorf("no Holder, knock pending: %v, want reject", v)
	}
}

// TestHolderSettlesWhenTheKnockIsDecided holds a SYN for a pending knock
// and gets it accepted once the knock is granted, and another one of the
// same source, for a port the knock does not open, rejected.
func TestHolderSettlesWhenTheKnockIsDecided(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{})
	alice := netip.MustParseAddr("198.18.0.2")
	env.e.KnockQueued(alice)
	env.send(t, alice, 2000, 1)
	env.send(t, alice, 3000, 2)
	env.wantNone(t)
	env.knock(t, alice, 2000)
	env.want(t, 1, packet.Accept)
	env.want(t, 2, packet.Reject)
	if s := env.e.Snapshot(); s.Gate["accept"] != 1 || s.Gate["reject"] != 2 || s.HoldTimeouts != 0 {
		t.Errorf("counters %+v, want 1 accept, 2 rejects (one the probe), no timeout", s)
	}
}

// TestHolderKeepsPacketsOfASecondPendingKnock: a source with two knocks
// pending keeps its held packet until the second is decided too.
func TestHolderKeepsPacketsOfASecondPendingKnock(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{})
	alice := netip.MustParseAddr("198.18.0.2")
	env.e.KnockQueued(alice)
	env.e.KnockQueued(alice)
	env.send(t, alice, 3000, 1)
	env.knock(t, alice, 2000)
	env.wantNone(t)
	env.knock(t, alice, 3000)
	env.want(t, 1, packet.Accept)
}

// TestHolderSettlesAtOnce: a packet whose knock was decided before the
// Holder took it is settled at once; packets over the per-source or total
// bound are not deferred at all, and the slots come back once settled.
func TestHolderSettlesAtOnce(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{MaxHeld: 3, MaxHeldPerSource: 2})
	alice := netip.MustParseAddr("198.18.0.2")
	bob := netip.MustParseAddr("198.18.0.4")
	carol := netip.MustParseAddr("198.18.0.5")

	env.e.KnockQueued(alice)
	h := header(alice, packet.TCP, 2000)
	if v, _ := env.e.Verdict(&h, env.clock.Now()); v != packet.Defer {
		t.Fatalf("gate verdict %v, want defer", v)
	}
	env.knock(t, alice, 2000) // decided before the packet reaches the Holder
	env.hold(alice, 2000, 1)
	env.want(t, 1, packet.Accept)

	for _, src := range []netip.Addr{alice, bob, carol} {
		env.e.KnockQueued(src)
	}
	for i, tt := range []struct {
		src  netip.Addr
		want packet.Verdict
	}{
		{alice, packet.Defer},
		{alice, packet.Defer},
		{alice, packet.Reject}, // over alice's share
		{bob, packet.Defer},
		{carol, packet.Reject}, // over the total
	} {
		if got := env.send(t, tt.src, 3000, uint32(10+i)); got != tt.want {
			t.Errorf("packet %d from %s: gate verdict %v, want %v", 10+i, tt.src, got, tt.want)
		}
	}
	if s := env.e.Snapshot(); s.HoldOverflows != 2 || s.Deferred != 4 {
		t.Errorf("HoldOverflows %d, Deferred %d; want 2 and 4", s.HoldOverflows, s.Deferred)
	}
	env.knock(t, bob, 2000)
	env.want(t, 13, packet.Reject) // bob's knock opens tcp/2000, not tcp/3000
	if got := env.send(t, carol, 3000, 20); got != packet.Defer {
		t.Errorf("after bob's packet was settled, carol's: %v, want defer (a slot came back)", got)
	}
}

// TestHolderTimesOut: a held packet whose knock is not decided within the
// timeout (on the engine's clock) is decided as if never held.
func TestHolderTimesOut(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{Timeout: 10 * time.Millisecond})
	alice := netip.MustParseAddr("198.18.0.2")
	env.e.KnockQueued(alice)
	env.send(t, alice, 2000, 1)
	env.wantNone(t)
	env.clock.Advance(10 * time.Millisecond)
	env.want(t, 1, packet.Reject) // the timer fires in real time and finds it due
	if s := env.e.Snapshot(); s.HoldTimeouts != 1 {
		t.Errorf("HoldTimeouts = %d, want 1", s.HoldTimeouts)
	}
}
