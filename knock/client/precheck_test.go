package client_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/knock/client"
	"sknock/pki"
)

// writeCert writes a self-signed P-256 certificate made from tmpl as PEM.
func writeCert(t *testing.T, tmpl *x509.Certificate) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "odd.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadPreChecks: each file the client cannot knock with is refused
// before anything is sent, with words that say what is wrong with it.
func TestLoadPreChecks(t *testing.T) {
	p := newTestPKI(t)
	if err := pki.IssueServer(p.dir, "shortserver", testPassword, pki.IssueOptions{Days: 1}); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueClient(p.dir, "shortclient", pki.Authorization{}, testPassword, pki.IssueOptions{Days: 1}); err != nil {
		t.Fatal(err)
	}
	alice := p.ca.Issued(t, "alice")
	noAgreement := writeCert(t, &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	shortServer := filepath.Join(p.dir, "shortserver.pem")
	shortClient := filepath.Join(p.dir, "shortclient.pfx")
	in2days := time.Now().Add(48 * time.Hour)
	expiry := func(path string) string {
		certs, err := pki.LoadCertificates(path)
		if err != nil {
			t.Fatal(err)
		}
		return certs[0].NotAfter.UTC().Format("2006-01-02 15:04 MST")
	}
	clientNotBefore := alice.Cert.NotBefore.UTC().Format("2006-01-02 15:04 MST")
	tests := []struct {
		name               string
		bundle, serverCert string
		now                time.Time
		wantErr            error
		want               string
	}{
		{
			name: "CA as server cert", bundle: p.clientPFX, serverCert: filepath.Join(p.dir, "ca.pem"), wantErr: client.ErrBadServerCert,
			want: "not the gatekeeper's certificate: --server-cert " + filepath.Join(p.dir, "ca.pem") + " (CN=sknock CA) is a CA certificate; give the gatekeeper's own certificate (NAME.pem of 'sknock pki server'), not the CA's",
		},
		{
			name: "client cert as server cert", bundle: p.clientPFX, serverCert: alice.CertFile, wantErr: client.ErrBadServerCert,
			want: "not the gatekeeper's certificate: --server-cert " + alice.CertFile + " (CN=alice) is a client certificate; give the gatekeeper's certificate, not one of a client",
		},
		{
			name: "bundle as server cert", bundle: p.clientPFX, serverCert: p.serverPFX, wantErr: client.ErrBadServerCert,
			want: "not the gatekeeper's certificate: --server-cert " + p.serverPFX + " is a PKCS#12 bundle; give the gatekeeper's certificate (DER or PEM, e.g. NAME.pem of 'sknock pki server'), never its bundle",
		},
		{
			name: "no key agreement", bundle: p.clientPFX, serverCert: noAgreement, wantErr: client.ErrBadServerCert,
			want: "not the gatekeeper's certificate: --server-cert " + noAgreement + " (CN=signer) is not a key-agreement certificate (its key usage lacks keyAgreement), so knocks cannot be encrypted to it",
		},
		{
			name: "server cert expired", bundle: p.clientPFX, serverCert: shortServer, now: in2days, wantErr: client.ErrBadServerCert,
			want: "not the gatekeeper's certificate: --server-cert " + shortServer + " (CN=shortserver) expired on " + expiry(shortServer) + "; ask the gatekeeper's operator for the current one",
		},
		{
			name: "client cert expired", bundle: shortClient, serverCert: p.serverCert, now: in2days, wantErr: client.ErrBadClientCert,
			want: "client certificate not valid now: your certificate CN=shortclient (in " + shortClient + ") expired on " + expiry(filepath.Join(p.dir, "shortclient.pem")) + "; the gatekeeper refuses its knocks: ask for a new one",
		},
		{
			name: "client cert not yet valid", bundle: p.clientPFX, serverCert: p.serverCert, now: alice.Cert.NotBefore.Add(-time.Hour), wantErr: client.ErrBadClientCert,
			want: "client certificate not valid now: your certificate CN=alice (in " + p.clientPFX + ") is not valid before " + clientNotBefore + "; the gatekeeper refuses its knocks until then (or this machine's clock is wrong)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &client.Config{}
			if !tt.now.IsZero() {
				cfg.Now = func() time.Time { return tt.now }
			}
			_, err := client.Load(tt.bundle, testPassword, tt.serverCert, cfg)
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.want {
				t.Errorf("Load error\n got  %v\n want %s", err, tt.want)
			}
		})
	}
	// The good pair loads.
	if _, err := client.Load(p.clientPFX, testPassword, p.serverCert, nil); err != nil {
		t.Errorf("Load of a good bundle and server certificate: %v", err)
	}
}

// BenchmarkLoad is what a knock pays before sending: the bundle unlocked,
// both certificates parsed and checked.
func BenchmarkLoad(b *testing.B) {
	p := newTestPKI(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Load(p.clientPFX, testPassword, p.serverCert, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCertificate is the share of BenchmarkLoad the pre-checks
// added: one full x509 parse (they do two, the client's and the server's).
func BenchmarkParseCertificate(b *testing.B) {
	p := newTestPKI(b)
	certs, err := pki.LoadCertificates(p.serverCert)
	if err != nil {
		b.Fatal(err)
	}
	der := certs[0].Raw
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x509.ParseCertificate(der); err != nil {
			b.Fatal(err)
		}
	}
}
