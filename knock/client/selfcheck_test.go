package client_test

import (
	"context"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"sknock/knock/client"
	"sknock/pki"
)

// TestSelfCheckClockOff: a client whose clock is 30 s ahead is refused
// (the fake gatekeeper keeps the real time); the failure says the clock
// is off, measured against the address echo's HTTPS Date.
func TestSelfCheckClockOff(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1)
	echo := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("127.0.0.1\n")) }))
	defer echo.Close()
	roots := x509.NewCertPool()
	roots.AddCert(echo.Certificate())
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: 50 * time.Millisecond, Retries: -1,
		Now:        func() time.Time { return time.Now().Add(30 * time.Second) },
		AddressURL: echo.URL, AddressRoots: roots,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if err == nil || !strings.Contains(err.Error(), "this host's clock is 30s ahead of the time in the HTTPS answer of "+echo.URL) {
		t.Errorf("Knock: %v; want the clock named, 30s ahead", err)
	}
	if d := g.waitDecisions(1)[0]; d.Reason.String() != "future_timestamp" {
		t.Errorf("the fake gatekeeper's reason: %v, want future_timestamp", d.Reason)
	}
}

// TestSelfCheckRevoked: a client whose certificate the CA revoked is
// refused; with the CA's CRL reachable (plain http, signed by the CA) the
// failure says the certificate is revoked.
func TestSelfCheckRevoked(t *testing.T) {
	p := newTestPKI(t)
	p.ca.Revoke(t, "alice")
	b, err := pki.LoadBundle(p.serverPFX, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	trust := *p.trust
	trust.Verifier = pki.NewVerifier(b.CAs, p.ca.LoadCRL(t))
	g := newFakeGate(t, &trust, time.Now, 1)
	crl, err := os.ReadFile(p.ca.CRLFile())
	if err != nil {
		t.Fatal(err)
	}
	crlServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(crl) }))
	defer crlServer.Close()
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: 50 * time.Millisecond, Retries: -1,
		CRLURL: crlServer.URL + "/ca.crl",
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	serial := p.ca.Issued(t, "alice").Serial()
	if err == nil || !strings.Contains(err.Error(), "your certificate (serial "+serial+") is revoked by the CA's CRL at "+crlServer.URL) || strings.Contains(err.Error(), "clock") {
		t.Errorf("Knock: %v; want the certificate named revoked, and nothing of the clock", err)
	}
	if d := g.waitDecisions(1)[0]; d.Reason.String() != "revoked" {
		t.Errorf("the fake gatekeeper's reason: %v, want revoked", d.Reason)
	}
}
