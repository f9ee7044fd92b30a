package pki

import (
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sknock/packet"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		give    string
		wantErr bool
	}{
		{give: "client-a"}, {give: "srv_1.example"}, {give: "A"},
		{give: "", wantErr: true}, {give: "a/b", wantErr: true}, {give: "..", wantErr: true},
		{give: "../x", wantErr: true}, {give: ".hidden", wantErr: true}, {give: "-flag", wantErr: true},
		{give: "ca", wantErr: true}, {give: "a b", wantErr: true}, {give: "é", wantErr: true},
		{give: string(make([]byte, 65)), wantErr: true},
	}
	for _, tt := range tests {
		if err := ValidateName(tt.give); (err != nil) != tt.wantErr {
			t.Errorf("ValidateName(%q) = %v, want error %v", tt.give, err, tt.wantErr)
		}
	}
}

func TestIssueLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := InitCA(dir, 0); !errors.Is(err, ErrExists) {
		t.Fatalf("second InitCA: got %v, want ErrExists", err)
	}
	checkMode(t, filepath.Join(dir, CAKeyFile), 0o600)
	checkMode(t, filepath.Join(dir, CACertFile), 0o644)
	cas, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if ca := cas[0]; !ca.IsCA || ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign || len(ca.SubjectKeyId) == 0 {
		t.Errorf("CA certificate: IsCA %v KeyUsage %v SKI %x", ca.IsCA, ca.KeyUsage, ca.SubjectKeyId)
	}

	allow := Authorization{{packet.TCP, 2000}, {packet.UDP, 8000}}
	if err := IssueServer(dir, "server", "pw", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := IssueClient(dir, "alice", allow, "pw", IssueOptions{Days: 10}); err != nil {
		t.Fatal(err)
	}
	if err := IssueClient(dir, "bob", allow, "pw", IssueOptions{Legacy: true}); err != nil {
		t.Fatal(err)
	}
	if err := IssueClient(dir, "alice", allow, "pw", IssueOptions{}); !errors.Is(err, ErrExists) {
		t.Fatalf("reissue alice: got %v, want ErrExists", err)
	}
	if err := IssueServer(dir, "../evil", "pw", IssueOptions{}); err == nil {
		t.Fatal("bad name accepted")
	}
	checkMode(t, filepath.Join(dir, "alice.pfx"), 0o600)
	checkMode(t, filepath.Join(dir, "alice.pem"), 0o644)
	if _, err := os.Stat(filepath.Join(dir, "alice.key")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("alice.key should not exist: %v", err)
	}

	server, err := LoadBundle(filepath.Join(dir, "server.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if len(server.Cert.ExtKeyUsage) != 1 || server.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server EKU %v", server.Cert.ExtKeyUsage)
	}
	alice, err := LoadBundle(filepath.Join(dir, "alice.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := LoadBundle(filepath.Join(dir, "bob.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	if alice.Cert.SerialNumber.BitLen() < 64 || alice.Cert.Subject.CommonName != "alice" {
		t.Errorf("serial %s CN %q", alice.Cert.SerialNumber, alice.Cert.Subject.CommonName)
	}
	if got := alice.Cert.NotAfter.Sub(alice.Cert.NotBefore); got != 10*24*time.Hour+backdate {
		t.Errorf("validity %v", got)
	}
	if string(alice.Cert.AuthorityKeyId) != string(cas[0].SubjectKeyId) {
		t.Error("AKI does not match the CA's SKI")
	}

	now := time.Now()
	v := NewVerifier(cas, nil)
	for _, b := range []*Bundle{alice, bob} {
		c, err := v.Verify(b.Cert.Raw, now)
		if err != nil {
			t.Fatal(err)
		}
		if c.Authorization.String() != allow.String() {
			t.Errorf("authorization %s", c.Authorization)
		}
	}

	if err := Revoke(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := Revoke(dir, "alice"); err == nil {
		t.Error("second revoke: no error")
	}
	if err := Revoke(dir, "nobody"); err == nil {
		t.Error("revoke unknown: no error")
	}
	for want := int64(1); want <= 2; want++ {
		if err := WriteCRL(dir, 0); err != nil {
			t.Fatal(err)
		}
		crl, err := LoadCRL(filepath.Join(dir, CRLFile), cas)
		if err != nil {
			t.Fatal(err)
		}
		if crl.Number.Cmp(big.NewInt(want)) != 0 || crl.Len() != 1 {
			t.Errorf("CRL number %s len %d, want %d 1", crl.Number, crl.Len(), want)
		}
		v := NewVerifier(cas, crl)
		if _, err := v.Verify(alice.Cert.Raw, now); !errors.Is(err, ErrRevoked) {
			t.Errorf("alice: got %v, want ErrRevoked", err)
		}
		if _, err := v.Verify(bob.Cert.Raw, now); err != nil {
			t.Errorf("bob: %v", err)
		}
	}
}

func TestIssueWithoutCA(t *testing.T) {
	dir := t.TempDir()
	if err := IssueClient(dir, "x", Authorization{{packet.TCP, 22}}, "pw", IssueOptions{}); err == nil {
		t.Error("issued without a CA")
	}
	if err := WriteCRL(dir, 0); err == nil {
		t.Error("CRL without a CA")
	}
	if err := InitCA(dir, -1); err == nil {
		t.Error("negative days accepted")
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s mode %o, want %o", path, got, want)
	}
}
