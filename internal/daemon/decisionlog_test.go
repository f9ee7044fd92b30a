package daemon

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/gate"
	"sknock/packet"
	"sknock/pki"
)

// engineFor returns an engine trusting dir's CA, with the server bundle.
func engineFor(t *testing.T, dir string, clock func() time.Time) *gate.Engine {
	t.Helper()
	server, err := pki.LoadBundle(filepath.Join(dir, "server.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	trust, err := gate.NewTrust(server, server.CAs, nil, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return gate.NewEngine(gate.Config{Clock: clock, Policy: gate.PolicyReject}, trust)
}

// jsonKeys returns the keys of one JSON log line, in order.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	var keys []string
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		keys = append(keys, k.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
	}
	return keys
}

// TestDecisionLogKnockLines checks the one line each knock decision gets:
// its level, and its fields in the order sknockd has always written them.
func TestDecisionLogKnockLines(t *testing.T) {
	dir, _ := daemonPKI(t)
	now := time.Now()
	e := engineFor(t, dir, func() time.Time { return now })
	alice := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name      string
		datagram  []byte
		wantLevel string
		wantKeys  []string
	}{
		{
			name:      "grant",
			datagram:  sealFor(t, dir, "alice", 2000, "198.18.0.2"),
			wantLevel: "info",
			wantKeys:  []string{"level", "ts", "msg", "verdict", "source", "decide_us", "proto", "port", "client_ip", "skew_seconds", "subject", "serial", "open_seconds"},
		},
		{
			name:      "signed denial",
			datagram:  sealFor(t, dir, "alice", 2001, "198.18.0.2"),
			wantLevel: "warn",
			wantKeys:  []string{"level", "ts", "msg", "verdict", "source", "decide_us", "reason", "detail", "proto", "port", "client_ip", "skew_seconds", "subject", "serial"},
		},
		{
			name:      "garbage",
			datagram:  bytes.Repeat([]byte{'a'}, 400),
			wantLevel: "warn",
			wantKeys:  []string{"level", "ts", "msg", "verdict", "source", "decide_us", "reason", "detail"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 20)
			d := e.Knock(alice, tt.datagram)
			l.knock(alice, &d, now, now.Add(250*time.Microsecond), 15*time.Second)
			line := strings.TrimSpace(out.String())
			if diff := cmp.Diff(tt.wantKeys, jsonKeys(t, line)); diff != "" {
				t.Errorf("keys (-want +got):\n%s\nline: %s", diff, line)
			}
			var fields map[string]any
			if err := json.Unmarshal([]byte(line), &fields); err != nil {
				t.Fatal(err)
			}
			if fields["level"] != tt.wantLevel || fields["msg"] != "knock" || fields["decide_us"] != 250.0 {
				t.Errorf("level %v, msg %v, decide_us %v; want %s, knock, 250", fields["level"], fields["msg"], fields["decide_us"], tt.wantLevel)
			}
		})
	}
}

// TestDecisionLogLimitsDenials replays a signed knock for a port alice may
// not open 100 times within a second: 5 lines get through, and the next
// second's first line reports the 95 suppressed. Garbage has a budget of
// its own, so it cannot hide signed denials.
func TestDecisionLogLimitsDenials(t *testing.T) {
	dir, _ := daemonPKI(t)
	now := time.Unix(1_800_000_000, 0)
	e := engineFor(t, dir, time.Now)
	alice := netip.MustParseAddr("198.18.0.2")
	var out bytes.Buffer
	l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 5)
	signed := sealFor(t, dir, "alice", 2001, "198.18.0.2")
	garbage := bytes.Repeat([]byte{'a'}, 400)
	for range 100 {
		d := e.Knock(alice, signed)
		l.knock(alice, &d, now, now, 0)
		g := e.Knock(alice, garbage)
		l.knock(alice, &g, now, now, 0)
	}
	if n := strings.Count(out.String(), `"reason":"not_authorized"`); n != 5 {
		t.Errorf("%d signed denial lines in one second, want 5", n)
	}
	if n := strings.Count(out.String(), `"reason":"malformed"`); n != 5 {
		t.Errorf("%d garbage lines in one second, want 5", n)
	}
	out.Reset()
	d := e.Knock(alice, signed)
	l.knock(alice, &d, now.Add(time.Second), now.Add(time.Second), 0)
	if !strings.Contains(out.String(), `"suppressed_before":95`) {
		t.Errorf("next second's line does not report 95 suppressed: %s", out.String())
	}
}

// TestDecisionLogBelowLevel: a logger above warn writes no knock or gate
// line.
func TestDecisionLogBelowLevel(t *testing.T) {
	dir, _ := daemonPKI(t)
	e := engineFor(t, dir, time.Now)
	var out bytes.Buffer
	l := newDecisionLog(newLoggerAt(logLevel("error"), &out), 20)
	alice := netip.MustParseAddr("198.18.0.2")
	d := e.Knock(alice, sealFor(t, dir, "alice", 2001, "198.18.0.2"))
	l.knock(alice, &d, time.Now(), time.Now(), 0)
	h := packet.Header{Family: 4, Proto: packet.TCP, Src: alice, DstPort: 2000}
	l.gateDenied(&h, packet.Reject, gate.PolicyReject, time.Now())
	if out.Len() != 0 {
		t.Errorf("logged below its level: %s", out.String())
	}
}

// TestDecideGateDoesNotAllocate: the gate's verdict function, denials
// logged through the limiter (one line a second gets through and
// allocates; the average over many calls rounds it away), does not
// allocate per packet.
func TestDecideGateDoesNotAllocate(t *testing.T) {
	dir, cfg := daemonPKI(t)
	var out bytes.Buffer
	d := &daemon{run: state{cfg: &cfg}, engine: engineFor(t, dir, time.Now), decisions: newDecisionLog(newLoggerAt(logLevel("info"), &out), 1)}
	granted := netip.MustParseAddr("198.18.0.2")
	d.engine.Grants().Add(gate.Grant{Source: granted, Proto: packet.TCP, Port: 2000}, gate.CertID{}, time.Now().Add(time.Hour))
	ok := packet.Header{Family: 4, Proto: packet.TCP, Src: granted, DstPort: 2000}
	denied := packet.Header{Family: 6, Proto: packet.TCP, Src: netip.MustParseAddr("fd00:5e::7"), DstPort: 2000}
	allocs := testing.AllocsPerRun(2000, func() {
		d.decideGate(&ok)
		d.decideGate(&denied)
	})
	if allocs != 0 {
		t.Errorf("decideGate allocates %.2f times per call pair, want 0", allocs)
	}
}
