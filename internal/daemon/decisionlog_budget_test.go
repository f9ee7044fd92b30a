package daemon

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/packet"
)

// TestDecisionLogReplayBudget replays one captured knock (stale, from the
// future, or seen before) 100 times in a second, as anyone holding a
// capture can: its lines use up a budget of their own, and the signed
// denials of fresh knocks (not_authorized, source_mismatch) and garbage
// in the same second are still logged.
func TestDecisionLogReplayBudget(t *testing.T) {
	dir, _ := daemonPKI(t)
	p := testpki.Load(t, dir, nil)
	alice := netip.MustParseAddr("198.18.0.2")
	seal := func(at time.Time) []byte {
		return p.Seal(t, "alice", packet.TCP, 2000, alice, at)
	}
	tests := []struct {
		name string
		// give returns the captured datagram; e is the engine it will be
		// replayed to, for a capture that must first be granted there.
		give func(t *testing.T, e *gate.Engine) []byte
		want string
	}{
		{
			name: "stale",
			give: func(*testing.T, *gate.Engine) []byte { return seal(time.Now().Add(-time.Hour)) },
			want: "stale_timestamp",
		},
		{
			name: "future",
			give: func(*testing.T, *gate.Engine) []byte { return seal(time.Now().Add(time.Hour)) },
			want: "future_timestamp",
		},
		{
			name: "replay",
			give: func(t *testing.T, e *gate.Engine) []byte {
				datagram := sealFor(t, dir, "alice", 2000, "198.18.0.2")
				if d := e.Knock(alice, datagram); !d.Granted() {
					t.Fatalf("first knock denied: %v (%v)", d.Reason, d.Err)
				}
				return datagram
			},
			want: "replay",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := engineFor(t, dir, time.Now)
			captured := tt.give(t, e)
			var out bytes.Buffer
			l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 5)
			at := time.Unix(1_800_000_000, 0)
			for range 100 {
				d := e.Knock(alice, captured)
				if got := d.Reason.String(); got != tt.want {
					t.Fatalf("captured knock denied for %s, want %s", got, tt.want)
				}
				l.knock(alice, &d, at, at, 0)
			}
			others := []struct {
				datagram []byte
				reason   string
			}{
				{sealFor(t, dir, "alice", 2001, "198.18.0.2"), "not_authorized"},
				{sealFor(t, dir, "alice", 2000, "198.18.0.3"), "source_mismatch"},
				{bytes.Repeat([]byte{'a'}, 400), "malformed"},
			}
			for _, o := range others {
				d := e.Knock(alice, o.datagram)
				if got := d.Reason.String(); got != o.reason {
					t.Fatalf("knock denied for %s, want %s", got, o.reason)
				}
				l.knock(alice, &d, at, at, 0)
			}
			if n := strings.Count(out.String(), `"reason":"`+tt.want+`"`); n != 5 {
				t.Errorf("%d %s lines in one second, want 5", n, tt.want)
			}
			for _, o := range others {
				if n := strings.Count(out.String(), `"reason":"`+o.reason+`"`); n != 1 {
					t.Errorf("%d %s lines after the %s flood, want 1", n, o.reason, tt.name)
				}
			}
		})
	}
}

// TestDecisionLogMismatchBudget: 100 signed knocks from an address other
// than the one they name (captures resent from elsewhere) use up a budget
// of their own: a not_authorized knock in the same second is still
// logged.
func TestDecisionLogMismatchBudget(t *testing.T) {
	dir, _ := daemonPKI(t)
	e := engineFor(t, dir, time.Now)
	var out bytes.Buffer
	l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 5)
	at := time.Unix(1_800_000_000, 0)
	from := netip.MustParseAddr("198.18.0.9")
	for i := range 100 {
		d := e.Knock(from, sealFor(t, dir, "alice", 2000, netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}).String()))
		if d.Reason != gate.ReasonSourceMismatch {
			t.Fatalf("knock %d: %v, want source_mismatch", i, d.Reason)
		}
		l.knock(from, &d, at, at, 0)
	}
	d := e.Knock(netip.MustParseAddr("198.18.0.2"), sealFor(t, dir, "alice", 2001, "198.18.0.2"))
	l.knock(netip.MustParseAddr("198.18.0.2"), &d, at, at, 0)
	if n := strings.Count(out.String(), `"reason":"source_mismatch"`); n != 5 {
		t.Errorf("%d source_mismatch lines in one second, want 5", n)
	}
	if n := strings.Count(out.String(), `"reason":"not_authorized"`); n != 1 {
		t.Errorf("%d not_authorized lines after the mismatch flood, want 1", n)
	}
}
