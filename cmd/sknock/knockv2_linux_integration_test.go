//go:build linux

package main

import (
	"strings"
	"testing"

	"sknock/internal/e2e"
	"sknock/internal/testenv"
)

// newKnockEnvWith is newKnockEnv with knockExtra added to the daemon's
// knock section, and a client certificate allowed allow.
func newKnockEnvWith(t *testing.T, knockExtra, allow string) *knockEnv {
	testenv.RequireRoot(t)
	_, sknock := e2e.BuildBinaries(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t)
	c := p.Client(t, "alice", allow)
	e2e.ServeTCPEcho(t, n.Server, ":2000")
	e2e.ServeTCPEcho(t, n.Server, ":3000")
	e2e.ServeUDPEcho(t, n.Server, ":8000")
	d := e2e.StartDaemon(t, n, p.Config(`knock:
  ports: "10000:60000"
`+knockExtra+`gate:
  protect: [tcp/2000, tcp/3000, udp/8000]
  open_duration: 1s
  policy: drop
`))
	return &knockEnv{t: t, sknock: sknock, net: n, pki: p, bundle: c.PKCS12, daemon: d}
}

// TestIntegrationKnockV2TwoPorts: the real client's default knock for two
// ports is one v2 datagram, which the real daemon grants whole: both
// ports open.
func TestIntegrationKnockV2TwoPorts(t *testing.T) {
	e := newKnockEnvWith(t, "", "tcp/2000,tcp/3000")
	e.waitClosed(e2e.AddrPort(e2e.ServerV4, 2000))
	e.waitClosed(e2e.AddrPort(e2e.ServerV4, 3000))
	r := e.knock("", "--retries", "0", e2e.ServerV4.String(), "tcp/2000,tcp/3000")
	if r.code != 0 || !strings.Contains(r.stdout, "tcp/2000 open (verified in ") || !strings.Contains(r.stdout, "tcp/3000 open (verified in ") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want both ports open", r.code, r.stdout, r.stderr)
	}
	line := e.daemonLine(0)
	if line.String("verdict") != "grant" || line.String("requests") != "tcp/2000,tcp/3000" || line.String("protocol") != "2" {
		t.Errorf("the daemon's knock line %v; want one v2 grant of tcp/2000,tcp/3000", line)
	}
	if n := countKnockLines(e); n != 1 {
		t.Errorf("%d knock lines, want 1 (one knock for both ports)", n)
	}
}

// TestIntegrationKnockProtocolsV1Only: an sknockd with knock.protocols:
// [1] refuses the client's default v2 knock, and the client says to try
// --protocol 1, which opens the port.
func TestIntegrationKnockProtocolsV1Only(t *testing.T) {
	e := newKnockEnvWith(t, "  protocols: [1]\n", "tcp/2000,udp/8000")
	addr := e2e.AddrPort(e2e.ServerV4, 2000)
	e.waitClosed(addr)
	r := e.knock("", "--retries", "1", "--timeout", "300ms", e2e.ServerV4.String(), "tcp/2000")
	if r.code != 1 || !strings.Contains(r.stderr, "try --protocol 1") {
		t.Errorf("v2 knock to a v1-only daemon: exit %d, stderr %q; want 1 and the hint", r.code, r.stderr)
	}
	if line := e.daemonLine(0); line.String("reason") != "protocol_refused" {
		t.Errorf("the daemon's knock line %v; want reason protocol_refused", line)
	}
	e.waitClosed(addr)
	if r := e.knock("", "--protocol", "1", e2e.ServerV4.String(), "tcp/2000"); r.code != 0 {
		t.Errorf("--protocol 1: exit %d, stderr %q; want the port open", r.code, r.stderr)
	}
}

// countKnockLines counts the daemon's knock lines so far.
func countKnockLines(e *knockEnv) int {
	n := 0
	for _, l := range e.daemon.Lines() {
		if l.Msg() == "knock" {
			n++
		}
	}
	return n
}
