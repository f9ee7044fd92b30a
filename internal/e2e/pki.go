package e2e

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/knock"
	"sknock/packet"
	"sknock/pki"
)

// KnockPort is a UDP port in the knock range of the configs tests write
// ("40000:40100"); any port in it works.
const KnockPort = 40000

// ServerName is the name (CN, file stem) of the server certificate NewPKI
// issues.
const ServerName = "gatekeeper"

// PKI is a CA directory made with the pki package, holding a server
// bundle and any clients issued since.
type PKI struct {
	// Dir is the CA directory (ca.pem, ca.key, NAME.pfx, NAME.pem, ca.crl).
	Dir string
	// Password protects every bundle; PasswordFile holds it.
	Password     string
	PasswordFile string
	// ServerPKCS12 is the server bundle, ServerCert its certificate file
	// (PEM) and ServerKey the public key clients seal knocks to.
	ServerPKCS12 string
	ServerCert   string
	ServerKey    *ecdh.PublicKey
}

// Client is an issued client certificate with its key.
type Client struct {
	Name   string
	PKCS12 string // the bundle file
	Key    *ecdsa.PrivateKey
	Cert   *x509.Certificate
}

// NewPKI makes a CA in a temporary directory, issues the server bundle
// and writes an empty CRL (CRLFile), failing t on any error.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	dir := t.TempDir()
	p := &PKI{
		Dir:          dir,
		Password:     "e2e-bundle-password",
		PasswordFile: filepath.Join(dir, "bundle.pass"),
		ServerPKCS12: filepath.Join(dir, ServerName+".pfx"),
		ServerCert:   filepath.Join(dir, ServerName+".pem"),
	}
	if err := os.WriteFile(p.PasswordFile, []byte(p.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pki.InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueServer(dir, ServerName, p.Password, pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := pki.LoadBundle(p.ServerPKCS12, p.Password)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := b.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("server certificate key is %T, want ECDSA", b.Cert.PublicKey)
	}
	if p.ServerKey, err = pub.ECDH(); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
	return p
}

// CRLFile is where WriteCRL writes the CA's CRL (DER).
func (p *PKI) CRLFile() string { return filepath.Join(p.Dir, pki.CRLFile) }

// Client issues a client certificate called name allowing allow (the
// `sknock pki client --allow` syntax, e.g. "tcp/2000,udp/8000").
func (p *PKI) Client(t testing.TB, name, allow string) *Client {
	t.Helper()
	authz, err := pki.ParseAllow(allow)
	if err != nil {
		t.Fatalf("--allow %q: %v", allow, err)
	}
	if err := pki.IssueClient(p.Dir, name, authz, p.Password, pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	c := &Client{Name: name, PKCS12: filepath.Join(p.Dir, name+".pfx")}
	b, err := pki.LoadBundle(c.PKCS12, p.Password)
	if err != nil {
		t.Fatal(err)
	}
	c.Key, c.Cert = b.Key, b.Cert
	return c
}

// Revoke revokes the named client and writes a new CRL to CRLFile. The
// daemon sees it after SIGHUP (or its next CRL refresh).
func (p *PKI) Revoke(t testing.TB, name string) {
	t.Helper()
	if err := pki.Revoke(p.Dir, name); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
}

// WriteCRL writes the CA's current CRL to CRLFile.
func (p *PKI) WriteCRL(t testing.TB) {
	t.Helper()
	if err := pki.WriteCRL(p.Dir, 0); err != nil {
		t.Fatal(err)
	}
}

// Config returns a daemon config: the server and crl sections for this
// PKI followed by sections (YAML with the other top-level sections, e.g.
// knock: and gate:; DESIGN.md's key names).
func (p *PKI) Config(sections string) string {
	return fmt.Sprintf("server:\n  pkcs12: %s\n  password_file: %s\ncrl:\n  file: %s\n%s\n",
		p.ServerPKCS12, p.PasswordFile, p.CRLFile(), sections)
}

// Seal returns a knock datagram from c asking to open proto/port, signed
// now, claiming to come from src, encrypted to server.
func (c *Client) Seal(t testing.TB, server *ecdh.PublicKey, proto packet.Proto, port uint16, src netip.Addr) []byte {
	t.Helper()
	k := &knock.Knock{
		Proto:       proto,
		Port:        port,
		ClientIP:    src,
		Timestamp:   uint32(time.Now().Unix()),
		Certificate: c.Cert.Raw,
	}
	b, err := knock.Seal(k, c.Key, server, nil)
	if err != nil {
		t.Fatalf("seal knock of %s for %s/%d: %v", c.Name, proto, port, err)
	}
	return b
}

// Serial returns the client certificate's serial as the daemon logs it.
func (c *Client) Serial() string { return c.Cert.SerialNumber.String() }
