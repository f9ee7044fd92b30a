//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sknock/internal/e2e"
)

// TestIntegrationRevocationOfGrantlessConns: alice and carol, behind one
// masquerading router, each hold a connection; carol's was opened under
// both their grants. Their grants expire (open_duration 1s), and then
// sknockd goes on (expired), is restarted (SIGTERM and start), or is
// killed with kill -9 and started, before carol is revoked by CRL or by
// `sknock grants revoke --serial`. Carol's connection must be reset
// within 2 s of the revocation, and alice's must live on: the record of
// who opened each connection outlives its grant and sknockd's restarts
// (it is kept in knock.replay_file + ".conns"). The soak found the
// restart cases (row revoked_outlived_grantless).
func TestIntegrationRevocationOfGrantlessConns(t *testing.T) {
	for _, tc := range []struct{ name, between, how string }{
		{"expired/crl", "", "crl"},
		{"restart/crl", "restart", "crl"},
		{"restart/serial", "restart", "serial"},
		{"kill9/crl", "kill9", "crl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, carolPFX, carolSerial := carolEnv(t, "1s")
			knock := e.knockAs
			if r := knock(e.bundle); r.code != 0 {
				t.Fatalf("alice's knock: exit %d, %q", r.code, r.stderr)
			}
			aliceConn := talk(t, e, "alice")
			if r := knock(carolPFX); r.code != 0 && r.code != exitAlreadyOpen {
				t.Fatalf("carol's knock: exit %d, %q", r.code, r.stderr)
			}
			e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool {
				return l.Msg() == "knock" && l.String("verdict") == "grant" && strings.Contains(l.String("subject"), "carol")
			})
			carolConn := talk(t, e, "carol")
			// Both grants expire; the connections go on. Then, past the
			// record's save interval, the restart.
			time.Sleep(2500 * time.Millisecond)
			switch tc.between {
			case "restart":
				e.daemon.Restart()
			case "kill9":
				e.daemon.Kill9()
				e.daemon.Restart()
			}
			if tc.between != "" {
				l := e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "connection record restored" })
				// Both held connections, and the client's probes of the
				// port that conntrack still knows.
				if n, _ := strconv.Atoi(l.String("connections")); n < 2 {
					t.Errorf("restored %v, want both held connections", l)
				}
			}
			time.Sleep(500 * time.Millisecond)
			if !carolConn.alive() || !aliceConn.alive() {
				t.Fatal("a connection ended before the revocation")
			}

			sent := time.Now()
			switch tc.how {
			case "crl":
				e.revokeInCRL(t, "carol")
			case "serial":
				e.revokeSerial(t, carolSerial)
			}
			carolConn.wantEndedWithin2s(t, "carol", sent)
			time.Sleep(time.Second)
			if !aliceConn.alive() {
				t.Error("alice's connection ended with carol's revocation")
			}
		})
	}
}

// TestIntegrationRevocationOfConnOpenedWhileRulesAway: another tool
// deletes sknock's jump; carol, whose grant is live, connects before the
// watcher puts the jump back, so her connection never meets the gate.
// After the restore sknockd finds it in conntrack and records it to
// carol's grant: revoking carol's certificate ends it within 2 s, and
// alice's connection, recorded to alice alone, goes on.
func TestIntegrationRevocationOfConnOpenedWhileRulesAway(t *testing.T) {
	e, carolPFX, carolSerial := carolEnv(t, "60s")
	knock := e.knockAs
	if r := knock(e.bundle); r.code != 0 {
		t.Fatalf("alice's knock: exit %d, %q", r.code, r.stderr)
	}
	aliceConn := talk(t, e, "alice") // met the gate: alice's alone
	if r := knock(carolPFX); r.code != 0 && r.code != exitAlreadyOpen {
		t.Fatalf("carol's knock: exit %d, %q", r.code, r.stderr)
	}
	e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool {
		return l.Msg() == "knock" && l.String("verdict") == "grant" && strings.Contains(l.String("subject"), "carol")
	})

	var carolConn *talker
	for attempt := 1; ; attempt++ {
		from := len(e.daemon.Lines())
		e.server.MustRun("iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-j", "SKNOCK")
		carolConn = talk(t, e, "carol")
		connected := time.Now()
		restored := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "rules restored" })
		at, err := time.Parse(time.RFC3339Nano, restored.String("ts"))
		if err != nil {
			t.Fatalf("rules restored line %v: ts: %v", restored, err)
		}
		if at.After(connected) {
			break // carol connected while the jump was away
		}
		if attempt == 3 {
			t.Fatalf("the watcher restored the jump before carol connected, 3 times")
		}
		carolConn.conn.Close()
	}
	time.Sleep(300 * time.Millisecond) // the watcher looks right after the restore

	sent := time.Now()
	e.revokeSerial(t, carolSerial)
	carolConn.wantEndedWithin2s(t, "carol", sent)
	time.Sleep(time.Second)
	if !aliceConn.alive() {
		t.Error("alice's connection ended with carol's revocation")
	}
	recorded := 0
	for _, l := range e.daemon.Lines() {
		if l.Msg() == "connections opened while the rules were away recorded to their live grants: a revocation ends them" {
			n, _ := strconv.Atoi(l.String("connections"))
			recorded += n
		}
	}
	if recorded < 1 {
		t.Errorf("no log line says carol's connection was recorded after the restore")
	}
}

// carolEnv is newNATEnv with carol's certificate (tcp/2000) beside
// alice's, a replay file (the connection record is saved beside it),
// policy reject, and grants of openDuration.
func carolEnv(t *testing.T, openDuration string) (e *natEnv, carolPFX, carolSerial string) {
	e = newNATEnv(t, func(e *natEnv) string {
		carol := e.pki.Client(t, "carol", "tcp/2000")
		carolPFX, carolSerial = carol.PKCS12, carol.Serial()
		return fmt.Sprintf(`server:
  pkcs12: %s
  password_file: %s
crl:
  file: %s
knock:
  ports: "10000:60000"
  replay_file: %s
gate:
  protect: [tcp/2000]
  open_duration: %s
  policy: reject
control:
  socket: %s
`, e.pki.ServerPKCS12, e.pki.PasswordFile, e.pki.CRLFile(), filepath.Join(e.pki.Dir, "replay"), openDuration, e.pki.ControlSocket())
	})
	return e, carolPFX, carolSerial
}

// knockAs knocks for tcp/2000 with bundle, from the router's address.
func (e *natEnv) knockAs(bundle string) sknockRun {
	e.t.Helper()
	return e.run("", "knock", "--pkcs12", bundle, "--server-cert", e.pki.ServerCert, "--password-file", e.pki.PasswordFile,
		"--source-ip", natWAN.String(), natServer.String(), "tcp/2000")
}
