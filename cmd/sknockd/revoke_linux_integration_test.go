//go:build linux

package main

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/packet"
)

// TestIntegrationRevocationEndsConnections: carol holds a connection to a
// protected port, talking to its echo service every quarter second; a
// SIGHUP whose CRL revokes her certificate ends her grant and, through the
// kernel's socket destroy, that connection within 2 s, and she cannot
// connect again. Alice's connection on another source is untouched.
func TestIntegrationRevocationEndsConnections(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "reject", time.Minute)
	carol, alice := e.client(false), e.mallory(true)
	_, line := e.knock(t, e.carol, carol, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})
	_, line = e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})

	carolStopped, aliceStopped := talk(t, carol, tcpA), talk(t, alice, tcpA)
	if carolStopped == nil || aliceStopped == nil {
		t.FailNow()
	}
	time.Sleep(600 * time.Millisecond) // a few round trips on both
	select {
	case at := <-carolStopped:
		t.Fatalf("carol's connection ended before the revocation, at %v", at)
	default:
	}

	e.pki.Revoke(t, "carol")
	from := len(e.daemon.Lines())
	sent := time.Now()
	e.daemon.Signal(syscall.SIGHUP)
	wantStoppedWithin(t, carolStopped, sent, "carol's connection", "the SIGHUP")
	ended := e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool { return l.Msg() == "grant ended" })
	if ended.String("source") != carol.addr.String() || ended.String("serial") != e.carol.Serial() {
		t.Errorf("grant ended line: %v, want source %s and serial %s", ended, carol.addr, e.carol.Serial())
	}
	marked := e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool { return strings.HasPrefix(l.Msg(), "connections of revoked grants ended") })
	if marked.String("connections") == "0" {
		t.Errorf("no connection marked: %v", marked)
	}
	e.wantClosed(t, carol, packet.TCP, tcpA)
	select {
	case at := <-aliceStopped:
		t.Errorf("alice's connection ended too, at %v", at)
	default:
	}
}
