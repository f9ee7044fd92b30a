package gate

import (
	"net/netip"
	"testing"
	"time"

	"sknock/knock"
)

// TestEngineHoldsWhileAKnockIsPending: between KnockQueued and Knock, the
// knocking source's packets without a grant are to be held; Knock calls
// KnockDecided once the grant is in place, and holding stops.
func TestEngineHoldsWhileAKnockIsPending(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	alice := netip.MustParseAddr("198.18.0.2")
	other := netip.MustParseAddr("198.18.0.3")
	var e *Engine
	var decided []netip.Addr
	var grantedWhenDecided bool
	e = NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, KnockDecided: func(src netip.Addr) {
		decided = append(decided, src)
		grantedWhenDecided = e.Verdict(src, 6, 2000) == Accept
	}}, p.trust(t))

	if e.Hold(alice, 6, 2000) {
		t.Fatal("Hold with no knock pending")
	}
	e.KnockQueued(alice)
	for _, tt := range []struct {
		name    string
		src     netip.Addr
		ipProto uint8
		want    bool
	}{
		{"pending source", alice, 6, true},
		{"pending source, udp", alice, 17, true},
		{"other source", other, 6, false},
		{"unknown protocol", alice, 1, false},
	} {
		if got := e.Hold(tt.src, tt.ipProto, 2000); got != tt.want {
			t.Errorf("%s: Hold = %v, want %v", tt.name, got, tt.want)
		}
	}
	if d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	if len(decided) != 1 || decided[0] != alice || !grantedWhenDecided {
		t.Errorf("KnockDecided calls %v (granted then: %v), want one for %s after the grant", decided, grantedWhenDecided, alice)
	}
	if e.Hold(alice, 6, 2001) {
		t.Error("Hold after the knock was decided")
	}

	// A knock never announced does not call KnockDecided.
	e.Knock(other, []byte("garbage"))
	if len(decided) != 1 {
		t.Errorf("KnockDecided called for a knock not announced: %v", decided)
	}
	// A granted source is not held for its granted port, even with another
	// knock pending.
	e.KnockQueued(alice)
	if e.Hold(alice, 6, 2000) {
		t.Error("Hold for a port with a live grant")
	}
	if !e.Hold(alice, 6, 2001) {
		t.Error("no Hold for another port while a knock is pending")
	}
	e.KnockUnhandled(alice)
	if e.Hold(alice, 6, 2001) || len(decided) != 2 {
		t.Errorf("after KnockUnhandled: Hold %v, KnockDecided calls %d; want false, 2", e.Hold(alice, 6, 2001), len(decided))
	}
	e.KnockUnhandled(alice) // one too many: ignored
	if e.pending.total.Load() != 0 || len(decided) != 2 {
		t.Errorf("pending total %d, KnockDecided calls %d after an unmatched KnockUnhandled", e.pending.total.Load(), len(decided))
	}
}

func TestEngineNeverHoldsUnderPolicyNone(t *testing.T) {
	e := NewEngine(Config{Policy: PolicyNone}, nil)
	src := netip.MustParseAddr("198.18.0.2")
	e.KnockQueued(src)
	if e.Hold(src, 6, 2000) {
		t.Error("Hold under policy none, which accepts anyway")
	}
}

func TestEngineHoldDoesNotAllocate(t *testing.T) {
	e := NewEngine(Config{}, nil)
	src := netip.MustParseAddr("198.18.0.2")
	if n := testing.AllocsPerRun(100, func() { e.Hold(src, 6, 2000) }); n != 0 {
		t.Errorf("Hold with nothing pending: %v allocations", n)
	}
	e.KnockQueued(src)
	if n := testing.AllocsPerRun(100, func() { e.Hold(src, 6, 2000) }); n != 0 {
		t.Errorf("Hold with a knock pending: %v allocations", n)
	}
}
