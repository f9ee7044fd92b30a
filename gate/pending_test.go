package gate

import (
	"net/netip"
	"testing"
)

// TestPendingDeferralSlots checks the deferral bounds: only a source with
// a knock pending gets slots, at most perSource each and total in all;
// undefer gives one back, resetDeferred all; the entry goes once empty.
func TestPendingDeferralSlots(t *testing.T) {
	var p pendingKnocks
	a := netip.MustParseAddr("198.18.0.2")
	b := netip.MustParseAddr("198.18.0.3")
	try := func(src netip.Addr) (bool, bool) { return p.tryDefer(src, 2, 3) }
	if ok, full := try(a); ok || full {
		t.Fatalf("no knock pending: tryDefer = %v, %v; want false, false", ok, full)
	}
	p.add(a)
	p.add(b)
	for i, want := range []bool{true, true, false} {
		if ok, full := try(a); ok != want || full == want {
			t.Errorf("a, try %d: %v, %v; want %v", i+1, ok, full, want)
		}
	}
	if ok, _ := try(b); !ok {
		t.Error("b's first slot refused")
	}
	if ok, full := try(b); ok || !full {
		t.Errorf("b over the total: %v, %v; want false, true", ok, full)
	}
	p.undefer(a)
	if ok, _ := try(b); !ok {
		t.Error("a slot given back by a was not taken by b")
	}
	p.done(a)
	p.done(b)
	p.resetDeferred()
	if len(p.by) != 0 || p.held != 0 {
		t.Errorf("after done and resetDeferred: %d entries, %d held; want none", len(p.by), p.held)
	}
	p.undefer(a) // a slot forgotten by the reset: no-op
	if p.held != 0 {
		t.Errorf("undefer after reset: held %d, want 0", p.held)
	}
}
