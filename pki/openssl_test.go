package pki

import (
	"os/exec"
	"path/filepath"
	"sknock/packet"
	"strings"
	"testing"
)

// TestOpenSSLInterop checks what the CA writes with the openssl tool:
// certificates verify, modern and legacy bundles open, and the CRL lists
// the revoked serial.
func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not on PATH")
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}
	dir := t.TempDir()
	if err := InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := IssueServer(dir, "server", "pw", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	allow := Authorization{{packet.TCP, 2000}, {packet.TCP, 3000}, {packet.UDP, 8000}}
	for _, name := range []string{"modern", "legacy"} {
		if err := IssueClient(dir, name, allow, "pw", IssueOptions{Legacy: name == "legacy"}); err != nil {
			t.Fatal(err)
		}
	}
	ca := filepath.Join(dir, CACertFile)
	for _, name := range []string{"server", "modern", "legacy"} {
		if out, err := run("verify", "-CAfile", ca, filepath.Join(dir, name+".pem")); err != nil || !strings.Contains(out, "OK") {
			t.Errorf("openssl verify %s: %v\n%s", name, err, out)
		}
		pfx := filepath.Join(dir, name+".pfx")
		out, err := run("pkcs12", "-info", "-in", pfx, "-noout", "-passin", "pass:pw")
		if err != nil && name == "legacy" {
			// OpenSSL 3 reads RC2-40 only with its legacy provider.
			out, err = run("pkcs12", "-legacy", "-info", "-in", pfx, "-noout", "-passin", "pass:pw")
		}
		if err != nil {
			t.Errorf("openssl pkcs12 %s: %v\n%s", name, err, out)
		}
		if name == "legacy" && !strings.Contains(out, "RC2") {
			t.Errorf("legacy bundle is not RC2:\n%s", out)
		}
	}
	out, err := run("x509", "-in", filepath.Join(dir, "modern.pem"), "-noout", "-text")
	if err != nil || !strings.Contains(out, "1.3.6.1.4.1.19518") || !strings.Contains(out, "1.2000,1.3000,0.8000") {
		t.Errorf("openssl x509 -text does not show the authorisation: %v\n%s", err, out)
	}

	if err := Revoke(dir, "modern"); err != nil {
		t.Fatal(err)
	}
	if err := WriteCRL(dir, 0); err != nil {
		t.Fatal(err)
	}
	b, err := LoadBundle(filepath.Join(dir, "modern.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	out, err = run("crl", "-inform", "DER", "-in", filepath.Join(dir, CRLFile), "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	serialHex := strings.ToUpper(b.Cert.SerialNumber.Text(16))
	if !strings.Contains(strings.ToUpper(out), serialHex) {
		t.Errorf("CRL does not list serial %s:\n%s", serialHex, out)
	}
	if out, err := run("crl", "-inform", "DER", "-in", filepath.Join(dir, CRLFile), "-CAfile", ca, "-noout"); err != nil || !strings.Contains(out, "verify OK") {
		t.Errorf("openssl crl verify: %v\n%s", err, out)
	}
}
