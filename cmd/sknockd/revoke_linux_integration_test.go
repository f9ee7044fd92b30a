//go:build linux

package main

import (
	"bufio"
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
// revoke connmark, that connection within 2 s, and she cannot connect
// again. Alice's connection on another source is untouched.
func TestIntegrationRevocationEndsConnections(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "reject", time.Minute)
	carol, alice := e.client(false), e.mallory(true)
	_, line := e.knock(t, e.carol, carol, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})
	_, line = e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})

	talk := func(p peer) (stopped <-chan time.Time) {
		conn, err := e2e.DialTCP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), tcpA), probeTimeout)
		if err != nil {
			t.Fatalf("%s: connect after the grant: %v", p.name, err)
		}
		t.Cleanup(func() { conn.Close() })
		done := make(chan time.Time, 1)
		go func() {
			r := bufio.NewReader(conn)
			for range 200 { // at most 50 s
				conn.SetDeadline(time.Now().Add(time.Second))
				if _, err := conn.Write([]byte("ping\n")); err != nil {
					done <- time.Now()
					return
				}
				if _, err := r.ReadString('\n'); err != nil {
					done <- time.Now()
					return
				}
				time.Sleep(250 * time.Millisecond)
			}
		}()
		return done
	}
	carolStopped, aliceStopped := talk(carol), talk(alice)
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
	select {
	case at := <-carolStopped:
		if took := at.Sub(sent); took > 2*time.Second {
			t.Errorf("carol's connection ended %v after the SIGHUP, want within 2 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("carol's connection still talks 5 s after the revocation")
	}
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
