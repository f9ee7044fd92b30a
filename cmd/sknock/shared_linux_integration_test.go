//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/pki"
)

// talker is a connection that talks to the echo service every quarter
// second; ended receives when it stopped answering.
type talker struct {
	conn  net.Conn
	ended chan time.Time
}

func talk(t *testing.T, e *natEnv, who string) *talker {
	t.Helper()
	conn, err := e2e.DialTCP(e.cli, netip.AddrPortFrom(natServer, 2000).String(), 2*time.Second)
	if err != nil {
		t.Fatalf("%s: connect: %v", who, err)
	}
	t.Cleanup(func() { conn.Close() })
	tk := &talker{conn: conn, ended: make(chan time.Time, 1)}
	go func() {
		r := bufio.NewReader(conn)
		for range 240 { // at most a minute
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte("ping\n")); err != nil {
				tk.ended <- time.Now()
				return
			}
			if _, err := r.ReadString('\n'); err != nil {
				tk.ended <- time.Now()
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	return tk
}

// revokeInCRL revokes name's certificate in the test CA's CRL and has
// sknockd reload it.
func (e *natEnv) revokeInCRL(t *testing.T, name string) {
	t.Helper()
	if err := pki.Revoke(e.pki.Dir, name); err != nil {
		t.Fatal(err)
	}
	e.pki.WriteCRL(t)
	e.daemon.Signal(syscall.SIGHUP)
}

// revokeSerial ends the grants of the certificate with serial through
// `sknock grants revoke --serial`.
func (e *natEnv) revokeSerial(t *testing.T, serial string) {
	t.Helper()
	if r := e.run("", "grants", "revoke", "--serial", serial, "--socket", e.pki.ControlSocket()); r.code != 0 {
		t.Fatalf("grants revoke --serial: exit %d, %q", r.code, r.stderr)
	}
}

// wantEndedWithin2s fails t unless who's connection stopped talking
// within 2 s of sent (and fails it at once if it talks 5 s after).
func (tk *talker) wantEndedWithin2s(t *testing.T, who string, sent time.Time) {
	t.Helper()
	select {
	case at := <-tk.ended:
		if took := at.Sub(sent); took > 2*time.Second {
			t.Errorf("%s's connection ended %v after the revocation, want within 2 s", who, took)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s's connection still talks 5 s after the revocation", who)
	}
}

func (tk *talker) alive() bool {
	select {
	case at := <-tk.ended:
		tk.ended <- at
		return false
	default:
		return true
	}
}

// TestIntegrationSharedAddressRevocation: carol and dave sit behind one
// masquerading router, so the gatekeeper sees both at one address. Carol
// knocks and holds a connection; then dave knocks (from the same address)
// and opens a connection, which is attributed to both their shares.
// Revoking dave (by CRL, by `sknock grants revoke --serial`, or by
// revoking the intermediate CA that issued him) resets the connection
// opened under his share within 2 s, while carol's own connection and
// grant survive; dave's next `sknock knock` does not print the success
// line: it says the port was already open (carol's grant) and exits 3.
func TestIntegrationSharedAddressRevocation(t *testing.T) {
	for _, how := range []string{"crl", "serial", "intermediate"} {
		t.Run(how, func(t *testing.T) {
			var sub string
			var carolPFX, davePFX, daveSerial string
			e := newNATEnv(t, func(e *natEnv) string {
				carol := e.pki.Client(t, "carol", "tcp/2000")
				dave, dir := e.pki.Intermediate(t, "ops", "dave")
				sub = dir
				carolPFX, davePFX, daveSerial = carol.PKCS12, dave.PKCS12, dave.Serial()
				return fmt.Sprintf(`server:
  pkcs12: %s
  password_file: %s
  ca: %s
crl:
  file: %s
  extra:
    - {file: %s}
knock:
  ports: "10000:60000"
  replay_file: %s
gate:
  protect: [tcp/2000]
  open_duration: 1m
  policy: reject
control:
  socket: %s
`, e.pki.ServerPKCS12, e.pki.PasswordFile, filepath.Join(sub, "ca.pem"), e.pki.CRLFile(), filepath.Join(sub, "ca.crl"),
					filepath.Join(e.pki.Dir, "replay"), e.pki.ControlSocket())
			})
			knock := func(bundle string) sknockRun {
				t.Helper()
				return e.run("", "knock", "--pkcs12", bundle, "--server-cert", e.pki.ServerCert, "--password-file", e.pki.PasswordFile,
					"--source-ip", natWAN.String(), natServer.String(), "tcp/2000")
			}
			if r := knock(carolPFX); r.code != 0 {
				t.Fatalf("carol's knock: exit %d, %q", r.code, r.stderr)
			}
			carolConn := talk(t, e, "carol")
			time.Sleep(300 * time.Millisecond)
			if r := knock(davePFX); r.code != exitAlreadyOpen {
				// carol's grant already opened the port to the shared address
				t.Errorf("dave's knock under carol's grant: exit %d, stdout %q, stderr %q; want 3 (already open)", r.code, r.stdout, r.stderr)
			}
			granted := e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool {
				return l.Msg() == "knock" && l.String("verdict") == "grant" && strings.Contains(l.String("subject"), "dave")
			})
			if granted.String("source") != natWAN.String() {
				t.Fatalf("dave's grant: %v", granted)
			}
			daveConn := talk(t, e, "dave") // under both shares
			time.Sleep(600 * time.Millisecond)
			if !carolConn.alive() || !daveConn.alive() {
				t.Fatal("a connection ended before the revocation")
			}

			from := len(e.daemon.Lines())
			sent := time.Now()
			switch how {
			case "crl":
				if err := pki.Revoke(sub, "dave"); err != nil {
					t.Fatal(err)
				}
				if err := pki.WriteCRL(sub, 0); err != nil {
					t.Fatal(err)
				}
				e.daemon.Signal(syscall.SIGHUP)
			case "intermediate":
				e.revokeInCRL(t, "ops")
			case "serial":
				e.revokeSerial(t, daveSerial)
			}
			daveConn.wantEndedWithin2s(t, "dave", sent)
			ended := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "grant ended" })
			if ended.String("serial") != daveSerial || ended.String("address_still_open") != "true" {
				t.Errorf("grant ended line %v, want dave's serial with the address still open", ended)
			}
			time.Sleep(time.Second) // carol goes on talking
			if !carolConn.alive() {
				t.Error("carol's connection ended with dave's revocation")
			}
			if conn, err := e2e.DialTCP(e.cli, netip.AddrPortFrom(natServer, 2000).String(), 2*time.Second); err != nil {
				t.Errorf("a new connection under carol's grant: %v", err)
			} else {
				conn.Close()
			}
			if how == "serial" {
				return // dave's certificate is not revoked: he may knock again
			}
			from = len(e.daemon.Lines())
			r := knock(davePFX)
			if r.code != exitAlreadyOpen || verifiedIn.MatchString(r.stdout) || !strings.Contains(r.stderr, "tcp/2000 was already open to "+natWAN.String()) {
				t.Errorf("the revoked dave's knock: exit %d, stdout %q, stderr %q; want 3, no success line, already open", r.code, r.stdout, r.stderr)
			}
			if l := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" }); l.String("reason") != "revoked" {
				t.Errorf("the revoked dave's knock: %v, want reason revoked", l)
			}
		})
	}
}
