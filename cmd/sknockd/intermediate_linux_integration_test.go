//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/pki"
)

// TestIntegrationIntermediateCA: a client certificate issued by an
// intermediate CA (sknock pki init --parent) knocks successfully through
// the real daemon, whose server.ca is the intermediate's chain file; once
// the root's CRL revokes the intermediate (and a reload reads it), the
// client is refused while one issued by the root is not.
func TestIntegrationIntermediateCA(t *testing.T) {
	requireTools(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t) // the root, with the gatekeeper's bundle and an empty CRL
	alice := p.Client(t, "alice", "tcp/2000")
	dave, sub := p.Intermediate(t, "ops", "dave")
	config := fmt.Sprintf(`server:
  pkcs12: %s
  password_file: %s
  ca: %s
crl:
  file: %s
  extra:
    - {file: %s}
knock:
  ports: "40000:40100"
  replay_file: %s
gate:
  protect: [tcp/2000]
  policy: reject
control:
  socket: %s
`, p.ServerPKCS12, p.PasswordFile, filepath.Join(sub, "ca.pem"), p.CRLFile(), filepath.Join(sub, "ca.crl"),
		filepath.Join(p.Dir, "replay"), p.ControlSocket())
	d := e2e.StartDaemon(t, n, config)
	trust := d.WaitLog(`"msg":"trust loaded"`, logTimeout)
	if !strings.Contains(trust, `"cas":["CN=sknock CA ops","CN=sknock CA"]`) {
		t.Errorf("trust line %s, want both CAs", trust)
	}

	knock := func(c *testpki.Client) e2e.Line {
		t.Helper()
		from := len(d.Lines())
		if err := e2e.SendUDP(n.Client, e2e.AddrPort(e2e.ServerV4, e2e.KnockPort), c.Seal(t, p.ServerKey, packet.TCP, 2000, e2e.ClientV4, time.Now())); err != nil {
			t.Fatal(err)
		}
		return d.WaitLine(from, logTimeout, func(l e2e.Line) bool { return l.Msg() == "knock" })
	}
	checkLine(t, knock(dave), map[string]string{"verdict": "grant", "subject": "CN=dave"})

	if err := pki.Revoke(p.Dir, "ops"); err != nil { // at the root
		t.Fatal(err)
	}
	p.WriteCRL(t)
	from := len(d.Lines())
	d.Signal(syscall.SIGHUP)
	d.WaitLine(from, logTimeout, func(l e2e.Line) bool { return l.Msg() == "config reloaded" })
	line := knock(dave)
	checkLine(t, line, map[string]string{"verdict": "deny", "reason": "revoked"})
	if !strings.Contains(line.String("detail"), "issuing CA CN=sknock CA ops") {
		t.Errorf("detail %q, want it to name the revoked intermediate", line.String("detail"))
	}
	checkLine(t, knock(alice.Client), map[string]string{"verdict": "grant", "subject": "CN=alice"})
}
