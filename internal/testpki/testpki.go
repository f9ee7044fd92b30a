// Package testpki builds throwaway PKIs for tests the way an operator does
// with `sknock pki`, through package pki: a CA in a temporary directory, a
// server bundle, clients by name with allow lists, knocks sealed by them,
// and revocations published in a new CRL. Every helper fails the test on
// error, so tests read as a list of steps.
//
// It does not build gate trust (package gate's own tests use it, so it
// cannot import gate); Server, CAs and LoadCRL are the parts a test hands
// to gate.NewTrust.
package testpki

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/knock"
	"sknock/packet"
	"sknock/pki"
)

// Defaults of a zero Options.
const (
	// DefaultServer is the server certificate's name and file stem.
	DefaultServer = "server"
	// DefaultPassword protects every bundle.
	DefaultPassword = "pw"
)

// Options tune New and Load. A nil *Options is the zero value.
type Options struct {
	// Server is the server certificate's name (its CN and file stem);
	// empty means DefaultServer.
	Server string
	// Password protects every bundle; empty means DefaultPassword.
	Password string
	// Clients are issued by New, name to allow list in the `sknock pki
	// client --allow` syntax ("tcp/2000,udp/8000"); nil issues none. Load
	// ignores it.
	Clients map[string]string
}

// PKI is a CA directory with its server bundle and the clients issued
// since.
type PKI struct {
	// Dir is the CA directory: ca.pem and ca.key, NAME.pfx and NAME.pem
	// for every certificate, ca.crl once WriteCRL ran.
	Dir string
	// Password protects every bundle; PasswordFile holds it and a newline
	// (mode 0600), for --password-file and the daemon's password_file.
	Password     string
	PasswordFile string
	// ServerPKCS12 is the server bundle and ServerCert its certificate
	// (PEM), what clients are given.
	ServerPKCS12 string
	ServerCert   string
	// Server is the server bundle, decoded: its key, certificate and CA
	// certificates (Server.CAs).
	Server *pki.Bundle
	// ServerKey is the public key clients seal knocks to.
	ServerKey *ecdh.PublicKey

	clients map[string]*Client
}

// Client is an issued client certificate with its key.
type Client struct {
	// Name is the certificate's name (its CN and file stem).
	Name string
	// PKCS12 is the bundle file, CertFile the certificate (PEM).
	PKCS12   string
	CertFile string
	// Key and Cert are the bundle's key and certificate.
	Key  *ecdsa.PrivateKey
	Cert *x509.Certificate
}

// New makes a CA in a temporary directory (default validity), issues the
// server bundle and opts.Clients, and writes PasswordFile. It writes no
// CRL: call WriteCRL (or Revoke) for one.
func New(t testing.TB, opts *Options) *PKI {
	t.Helper()
	o := withDefaults(opts)
	dir := t.TempDir()
	if err := pki.InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueServer(dir, o.Server, o.Password, pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	p := Load(t, dir, &o)
	for name, allow := range o.Clients {
		p.Client(t, name, allow)
	}
	return p
}

// Load opens the CA in dir made by New (or by `sknock pki`), with the
// server bundle opts.Server, and writes PasswordFile there if it is
// missing. Clients issued before are found by name (Issued, Seal).
func Load(t testing.TB, dir string, opts *Options) *PKI {
	t.Helper()
	o := withDefaults(opts)
	p := &PKI{
		Dir:          dir,
		Password:     o.Password,
		PasswordFile: filepath.Join(dir, "password"),
		ServerPKCS12: filepath.Join(dir, o.Server+".pfx"),
		ServerCert:   filepath.Join(dir, o.Server+".pem"),
		clients:      map[string]*Client{},
	}
	if _, err := os.Stat(p.PasswordFile); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(p.PasswordFile, []byte(p.Password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	if p.Server, err = pki.LoadBundle(p.ServerPKCS12, p.Password); err != nil {
		t.Fatal(err)
	}
	pub, ok := p.Server.Cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("server certificate key is %T, want ECDSA", p.Server.Cert.PublicKey)
	}
	if p.ServerKey, err = pub.ECDH(); err != nil {
		t.Fatal(err)
	}
	return p
}

func withDefaults(opts *Options) Options {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Server == "" {
		o.Server = DefaultServer
	}
	if o.Password == "" {
		o.Password = DefaultPassword
	}
	return o
}

// Client issues a client certificate called name allowing allow (the
// `sknock pki client --allow` syntax; "" issues one without an
// authorisation name).
func (p *PKI) Client(t testing.TB, name, allow string) *Client {
	t.Helper()
	var authz pki.Authorization
	if allow != "" {
		var err error
		if authz, err = pki.ParseAllow(allow); err != nil {
			t.Fatalf("--allow %q: %v", allow, err)
		}
	}
	if err := pki.IssueClient(p.Dir, name, authz, p.Password, pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	return p.Issued(t, name)
}

// Issued returns the client called name, reading its bundle from Dir the
// first time.
func (p *PKI) Issued(t testing.TB, name string) *Client {
	t.Helper()
	if c, ok := p.clients[name]; ok {
		return c
	}
	c := &Client{Name: name, PKCS12: filepath.Join(p.Dir, name+".pfx"), CertFile: filepath.Join(p.Dir, name+".pem")}
	b, err := pki.LoadBundle(c.PKCS12, p.Password)
	if err != nil {
		t.Fatal(err)
	}
	c.Key, c.Cert = b.Key, b.Cert
	p.clients[name] = c
	return c
}

// Seal returns a knock datagram from the client called name asking to
// open proto/port for src, signed at at, encrypted to the server.
func (p *PKI) Seal(t testing.TB, name string, proto packet.Proto, port uint16, src netip.Addr, at time.Time) []byte {
	t.Helper()
	return p.Issued(t, name).Seal(t, p.ServerKey, proto, port, src, at)
}

// Seal returns a knock datagram from c asking to open proto/port for src,
// signed at at, encrypted to server.
func (c *Client) Seal(t testing.TB, server *ecdh.PublicKey, proto packet.Proto, port uint16, src netip.Addr, at time.Time) []byte {
	t.Helper()
	k := &knock.Knock{
		Proto:       proto,
		Port:        port,
		ClientIP:    src,
		Timestamp:   uint32(at.Unix()),
		Certificate: c.Cert.Raw,
	}
	b, err := knock.Seal(k, c.Key, server, nil)
	if err != nil {
		t.Fatalf("seal knock of %s for %s/%d: %v", c.Name, proto, port, err)
	}
	return b
}

// SealV2 returns a v2 knock datagram from the client called name asking
// to open reqs for src, signed at at, sealed to the server's certificate.
func (p *PKI) SealV2(t testing.TB, name string, reqs []knock.Request, src netip.Addr, at time.Time) []byte {
	t.Helper()
	target, err := knock.NewTarget(p.Server.Cert.RawSubjectPublicKeyInfo)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Issued(t, name)
	k := &knock.KnockV2{TimestampMillis: uint64(at.UnixMilli()), ClientIP: src, Requests: reqs, Chain: [][]byte{c.Cert.Raw}}
	b, err := knock.SealV2(k, c.Key, target, nil)
	if err != nil {
		t.Fatalf("seal v2 knock of %s: %v", name, err)
	}
	return b
}

// Serial returns the certificate's serial in decimal, as the daemon logs
// it.
func (c *Client) Serial() string { return c.Cert.SerialNumber.String() }

// CRLFile is where WriteCRL writes the CA's CRL (DER).
func (p *PKI) CRLFile() string { return filepath.Join(p.Dir, pki.CRLFile) }

// WriteCRL writes the CA's current CRL (default validity) to CRLFile.
func (p *PKI) WriteCRL(t testing.TB) {
	t.Helper()
	if err := pki.WriteCRL(p.Dir, 0); err != nil {
		t.Fatal(err)
	}
}

// Revoke revokes the client called name and writes a new CRL to CRLFile.
func (p *PKI) Revoke(t testing.TB, name string) {
	t.Helper()
	if err := pki.Revoke(p.Dir, name); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
}

// LoadCRL returns the CRL in CRLFile checked against the CA, or nil when
// none was written.
func (p *PKI) LoadCRL(t testing.TB) *pki.CRL {
	t.Helper()
	if _, err := os.Stat(p.CRLFile()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	crl, err := pki.LoadCRL(p.CRLFile(), p.Server.CAs)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// Intermediate makes an intermediate CA called caName under p's CA, in a
// temporary directory of its own with an empty CRL, and issues it the
// client called client, allowed tcp/2000. It returns the client and the
// intermediate's directory (its ca.pem holds the chain, its ca.crl the
// CRL).
func (p *PKI) Intermediate(t testing.TB, caName, client string) (*Client, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca-"+caName)
	if err := pki.InitIntermediate(dir, p.Dir, caName, 0); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueClient(dir, client, pki.Authorization{{Proto: packet.TCP, Port: 2000}}, p.Password, pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCRL(dir, 0); err != nil {
		t.Fatal(err)
	}
	c := &Client{Name: client, PKCS12: filepath.Join(dir, client+".pfx"), CertFile: filepath.Join(dir, client+".pem")}
	b, err := pki.LoadBundle(c.PKCS12, p.Password)
	if err != nil {
		t.Fatal(err)
	}
	c.Key, c.Cert = b.Key, b.Cert
	return c, dir
}
