package pki_test

import (
	"crypto/ecdsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/pki"
)

// spkiCerts issues a CA, a server and a client and returns their
// certificates' PEM paths.
func spkiCerts(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(dir, pki.DefaultCADays); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueServer(dir, "gatekeeper", "pw", pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	allow, err := pki.ParseAllow("tcp/22")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueClient(dir, "alice", allow, "pw", pki.IssueOptions{Legacy: true}); err != nil {
		t.Fatal(err)
	}
	return []string{filepath.Join(dir, "ca.pem"), filepath.Join(dir, "gatekeeper.pem"), filepath.Join(dir, "alice.pem")}
}

func TestCertificatePublicKeyAgreesWithX509(t *testing.T) {
	for _, path := range spkiCerts(t) {
		der, err := pki.LoadCertificateDER(path)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := pki.CertificatePublicKey(der)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !cert.PublicKey.(*ecdsa.PublicKey).Equal(pub) {
			t.Errorf("%s: public key differs from x509's", path)
		}
	}
}

func TestCertificatePublicKeyRefusesMalformed(t *testing.T) {
	der, err := pki.LoadCertificateDER(spkiCerts(t)[1])
	if err != nil {
		t.Fatal(err)
	}
	for name, give := range map[string][]byte{
		"empty":         nil,
		"truncated":     der[:len(der)/2],
		"trailing data": append(append([]byte(nil), der...), 0),
		"not a cert":    []byte{0x30, 0x03, 0x02, 0x01, 0x01},
	} {
		if _, err := pki.CertificatePublicKey(give); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoadCertificateDER(t *testing.T) {
	paths := spkiCerts(t)
	pemDER, err := pki.LoadCertificateDER(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	want, err := pki.LoadCertificates(paths[1])
	if err != nil {
		t.Fatal(err)
	}
	if string(pemDER) != string(want[0].Raw) {
		t.Error("PEM file: DER differs from the first certificate's")
	}
	derPath := filepath.Join(t.TempDir(), "server.der")
	if err := os.WriteFile(derPath, want[0].Raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := pki.LoadCertificateDER(derPath); err != nil || string(got) != string(want[0].Raw) {
		t.Errorf("DER file: %v, or bytes differ", err)
	}
	keyOnly := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyOnly, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadCertificateDER(keyOnly); err == nil || !strings.Contains(err.Error(), keyOnly) {
		t.Errorf("PEM without a certificate: err = %v, want one naming the file", err)
	}
	if _, err := pki.LoadCertificateDER(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("missing file: no error")
	}
}

// FuzzCertificatePublicKey: never panics, and whenever x509 parses the
// same bytes, agrees with it.
func FuzzCertificatePublicKey(f *testing.F) {
	for _, path := range spkiCerts(f) {
		der, err := pki.LoadCertificateDER(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		pub, err := pki.CertificatePublicKey(der)
		cert, xerr := x509.ParseCertificate(der)
		if xerr != nil || cert.PublicKey == nil {
			return // x509 leaves the key nil for algorithms it does not know
		}
		if err != nil {
			t.Fatalf("x509 parses it, CertificatePublicKey says %v", err)
		}
		type equaler interface{ Equal(any) bool }
		if k, ok := cert.PublicKey.(equaler); ok && !k.Equal(pub) {
			t.Fatal("public key differs from x509's")
		}
	})
}
