package gate

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// TestWideningReloadKeepsRememberedKnocks: a knock stamped 5 s ahead of
// the clock, granted under a 7 s tolerance, is remembered until 13 s from
// now; a reload widening the tolerance to 60 s keeps it remembered as long
// as the wider window accepts it, so a replay 15 s later is refused.
func TestWideningReloadKeepsRememberedKnocks(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	trust := p.trust(t)
	trust.Tolerance = 7 * time.Second
	e := NewEngine(Config{Clock: clock.Now}, trust)
	alice := netip.MustParseAddr("198.18.0.2")
	datagram := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(5*time.Second))
	if d := e.Knock(alice, datagram); !d.Granted() {
		t.Fatalf("knock stamped 5 s ahead: %v %v", d.Reason, d.Err)
	}
	wide := p.trust(t)
	wide.Tolerance = 60 * time.Second
	e.SetTrust(wide)
	clock.Advance(15 * time.Second)
	e.Sweep()
	if d := e.Knock(alice, datagram); d.Reason != ReasonReplay {
		t.Errorf("the same datagram 15 s later, after widening to 60 s: %v (%v), want replay", d.Reason, d.Err)
	}
}
