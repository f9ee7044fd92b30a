package daemon

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/knock"
	"sknock/packet"
	"sknock/pki"
	"sknock/rules"
)

// TestKnockForUnprotectedPort: a granted knock for a port outside
// gate.protect (or always allowed) is logged as not_protected, saying so;
// one for a protected port stays a grant.
func TestKnockForUnprotectedPort(t *testing.T) {
	dir, _ := daemonPKI(t) // alice may open tcp/2000
	alice := netip.MustParseAddr("198.18.0.2")
	for _, tt := range []struct {
		name          string
		protect, open []string
		want          string
	}{
		{"protected", []string{"tcp/2000"}, []string{"tcp/22"}, `"verdict":"grant"`},
		{"not protected", []string{"tcp/3000"}, []string{"tcp/22"}, `"verdict":"not_protected"`},
		{"always allowed under tcp/*", []string{"tcp/*"}, []string{"tcp/2000"}, `"verdict":"not_protected"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 20)
			var c rules.Config
			for _, s := range tt.protect {
				c.Protect = append(c.Protect, mustPortSpec(t, s))
			}
			for _, s := range tt.open {
				c.AlwaysAllow = append(c.AlwaysAllow, mustPortSpec(t, s))
			}
			l.setProtection(c)
			d := engineFor(t, dir, time.Now).Knock(alice, sealFor(t, dir, "alice", 2000, "198.18.0.2"))
			if !d.Granted() {
				t.Fatalf("knock: %v", d.Reason)
			}
			l.knock(alice, &d, time.Now(), time.Now(), 15*time.Second)
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("log %s lacks %s", out.String(), tt.want)
			}
			if strings.Contains(tt.want, "not_protected") && !strings.Contains(out.String(), "tcp/2000 is not in gate.protect") {
				t.Errorf("not_protected line without its detail: %s", out.String())
			}
		})
	}
}

// TestV2KnockForUnprotectedPorts: a granted v2 knock none of whose
// requests the host protects is logged as not_protected, naming them; one
// with a protected request stays a grant.
func TestV2KnockForUnprotectedPorts(t *testing.T) {
	dir, _ := daemonPKI(t) // alice may open tcp/2000
	alice := netip.MustParseAddr("198.18.0.2")
	for _, tt := range []struct {
		name, protect, want string
	}{
		{"protected", "tcp/2000", `"verdict":"grant"`},
		{"not protected", "tcp/3000", `"verdict":"not_protected"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 20)
			l.setProtection(rules.Config{Protect: []rules.PortSpec{mustPortSpec(t, tt.protect)}})
			server, err := pki.LoadBundle(filepath.Join(dir, "server.pfx"), "pw")
			if err != nil {
				t.Fatal(err)
			}
			trust, err := gate.NewTrust(server, server.CAs, nil, 7*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			e := gate.NewEngine(gate.Config{Protects: l.protects}, trust)
			datagram := testpki.Load(t, dir, nil).SealV2(t, "alice", []knock.Request{{Proto: packet.TCP, Port: 2000}}, alice, time.Now())
			d := e.Knock(alice, datagram)
			if !d.Granted() {
				t.Fatalf("knock: %v", d.Reason)
			}
			l.knock(alice, &d, time.Now(), time.Now(), 15*time.Second)
			if !strings.Contains(out.String(), tt.want) || !strings.Contains(out.String(), `"requests":"tcp/2000"`) {
				t.Errorf("log %s lacks %s and the requests", out.String(), tt.want)
			}
			if strings.Contains(tt.want, "not_protected") && !strings.Contains(out.String(), "none of tcp/2000 is in gate.protect") {
				t.Errorf("not_protected line without its detail: %s", out.String())
			}
		})
	}
}

func mustPortSpec(t *testing.T, s string) rules.PortSpec {
	t.Helper()
	p, err := rules.ParsePortSpec(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGateDenialsFoldedPerSource: one source's many gate denials (a
// client's probes around a failed knock) give one line per window, the
// next line counting the folded ones; another source still gets its own.
func TestGateDenialsFoldedPerSource(t *testing.T) {
	var out bytes.Buffer
	l := newDecisionLog(newLoggerAt(logLevel("info"), &out), 20)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	deny := func(src string, at time.Time) {
		h := packet.Header{Family: 4, Proto: packet.TCP, Src: netip.MustParseAddr(src), DstPort: 2000}
		l.gateDenied(&h, packet.Drop, gate.PolicyDrop, at)
	}
	for i := range 40 {
		deny("198.18.0.2", now.Add(time.Duration(i)*100*time.Millisecond))
	}
	deny("198.18.0.3", now)
	got := strings.Count(out.String(), `"msg":"gate denied"`)
	if got != 2 {
		t.Fatalf("%d gate denied lines for 40 packets of one source and 1 of another within 4 s, want 2:\n%s", got, out.String())
	}
	out.Reset()
	deny("198.18.0.2", now.Add(gateSourceWindow+time.Second))
	if !strings.Contains(out.String(), `"source":"198.18.0.2"`) || !strings.Contains(out.String(), `"source_folded":39`) {
		t.Errorf("line after the window: %s, want source_folded 39", out.String())
	}
}

func TestCountersNameGrantsGranted(t *testing.T) {
	if got := gate.ReasonNone.String(); got != "granted" {
		t.Errorf("a grant's reason is %q, want granted (in the counters, metrics and inspect alike)", got)
	}
}
