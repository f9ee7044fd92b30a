package gate

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// TestRecentlyGranted: a source that earned a grant keeps precedence
// for RecentGrantWindow (an IPv6 source: its /64), one whose knock was
// refused (a spoofed copy) never gets it, and the lookup does not
// allocate.
func TestRecentlyGranted(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now}, p.trust(t))
	v4, v6 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00:5e::2")
	spoofed := netip.MustParseAddr("198.19.0.9")

	if e.RecentlyGranted(v4) {
		t.Fatal("precedence before any grant")
	}
	if d := e.Knock(spoofed, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); d.Granted() {
		t.Fatal("spoofed copy granted")
	}
	for _, src := range []netip.Addr{v4, v6} {
		if d := e.Knock(src, p.seal(t, "alice", packet.TCP, 2000, src.String(), clock.Now())); !d.Granted() {
			t.Fatalf("%s: %v %v", src, d.Reason, d.Err)
		}
	}
	for src, want := range map[string]bool{
		"198.18.0.2": true, "fd00:5e::2": true, "fd00:5e::99": true, // same /64
		"198.18.0.3": false, "198.19.0.9": false, "fd00:5e:0:1::2": false,
	} {
		if got := e.RecentlyGranted(netip.MustParseAddr(src)); got != want {
			t.Errorf("RecentlyGranted(%s) = %v, want %v", src, got, want)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { e.RecentlyGranted(v4) }); allocs != 0 {
		t.Errorf("RecentlyGranted allocates %.1f times, want 0", allocs)
	}
	clock.Advance(RecentGrantWindow + time.Second)
	if e.RecentlyGranted(v4) || e.RecentlyGranted(v6) {
		t.Error("precedence outlived RecentGrantWindow")
	}
}
