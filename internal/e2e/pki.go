package e2e

import (
	"crypto/ecdh"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/packet"
)

// KnockPort is a UDP port in the knock range of the configs tests write
// ("40000:40100"); any port in it works.
const KnockPort = 40000

// ServerName is the name (CN, file stem) of the server certificate NewPKI
// issues.
const ServerName = "gatekeeper"

// PKI is a CA directory made with the pki package (see package testpki),
// holding a server bundle and any clients issued since. Its fields are
// testpki.PKI's: Dir, Password and PasswordFile, ServerPKCS12, ServerCert
// and ServerKey (the public key clients seal knocks to).
type PKI struct {
	*testpki.PKI
}

// Client is an issued client certificate with its key (see
// testpki.Client) whose Seal signs at the current time.
type Client struct {
	*testpki.Client
}

// NewPKI makes a CA in a temporary directory, issues the server bundle
// and writes an empty CRL (CRLFile), failing t on any error.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p := &PKI{testpki.New(t, &testpki.Options{Server: ServerName, Password: "e2e-bundle-password"})}
	p.WriteCRL(t)
	return p
}

// Client issues a client certificate called name allowing allow (the
// `sknock pki client --allow` syntax, e.g. "tcp/2000,udp/8000").
func (p *PKI) Client(t testing.TB, name, allow string) *Client {
	t.Helper()
	return &Client{p.PKI.Client(t, name, allow)}
}

// Config returns a daemon config: the server and crl sections for this
// PKI followed by sections (YAML with the other top-level sections, e.g.
// knock: and gate:; DESIGN.md's key names). Unless sections name one,
// knock.replay_file is put in the PKI's directory, so that daemons of
// one test share their replay memory across restarts and no test touches
// the host's /var/lib/sknock.
func (p *PKI) Config(sections string) string {
	// Each daemon keeps its replay memory in the test's own directory,
	// never in the host's /var/lib/sknock.
	if !strings.Contains(sections, "replay_file:") {
		replay := fmt.Sprintf("  replay_file: %s\n", filepath.Join(p.Dir, "replay"))
		if i := strings.Index(sections, "knock:\n"); i >= 0 {
			i += len("knock:\n")
			sections = sections[:i] + replay + sections[i:]
		} else {
			sections += "\nknock:\n" + replay
		}
	}
	// And its control socket there, never in the host's /run/sknock.
	if !strings.Contains(sections, "control:") {
		sections += fmt.Sprintf("\ncontrol:\n  socket: %s\n", p.ControlSocket())
	}
	return fmt.Sprintf("server:\n  pkcs12: %s\n  password_file: %s\ncrl:\n  file: %s\n%s\n",
		p.ServerPKCS12, p.PasswordFile, p.CRLFile(), sections)
}

// ControlSocket is where the daemons of Config put their control socket
// (control.socket), unless the sections name one.
func (p *PKI) ControlSocket() string { return filepath.Join(p.Dir, "control.sock") }

// Seal returns a knock datagram from c asking to open proto/port, signed
// now, claiming to come from src, encrypted to server.
func (c *Client) Seal(t testing.TB, server *ecdh.PublicKey, proto packet.Proto, port uint16, src netip.Addr) []byte {
	t.Helper()
	return c.Client.Seal(t, server, proto, port, src, time.Now())
}
