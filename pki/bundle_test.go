package pki

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"software.sslmate.com/src/go-pkcs12"
)

func TestLoadBundleVectors(t *testing.T) {
	for _, name := range []string{"server", "client-a", "client-b", "client-noauth", "client-revoked", "client-rogue"} {
		t.Run(name, func(t *testing.T) {
			b, err := LoadBundle(vector(name+".pfx"), vectorPassword)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.CAs) != 1 {
				t.Errorf("got %d CA certificates, want 1", len(b.CAs))
			}
			if name != "server" && b.Cert.Subject.CommonName != name {
				t.Errorf("certificate CN %q, want %q", b.Cert.Subject.CommonName, name)
			}
			if _, err := b.ECDHKey(); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestLoadBundleWrongPassword(t *testing.T) {
	path := vector("client-a.pfx")
	_, err := LoadBundle(path, "wrong")
	if !errors.Is(err, ErrPassword) {
		t.Fatalf("got %v, want ErrPassword", err)
	}
	if !strings.Contains(err.Error(), "password") || !strings.Contains(err.Error(), "load bundle "+path) {
		t.Errorf("error %q should name the file and the password", err)
	}
}

func TestLoadBundleMissingFile(t *testing.T) {
	_, err := LoadBundle(filepath.Join(t.TempDir(), "nope.pfx"), "x")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want not exist", err)
	}
}

func TestDecodeBundleEncoders(t *testing.T) {
	ca := newTestCA(t, "CA", nil)
	key := mustKey(t)
	der := ca.issue(t, clientTemplate(t, 5, "1.22"), &key.PublicKey)
	cert, _ := ParseCertificates(der)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCert, _ := ParseCertificates(ca.issue(t, clientTemplate(t, 6, ""), &rsaKey.PublicKey))
	tests := []struct {
		name    string
		enc     *pkcs12.Encoder
		key     any
		cert    int // 0: P-256 cert, 1: RSA cert
		wantErr string
	}{
		{name: "modern", enc: pkcs12.Modern, key: key},
		{name: "modern2026", enc: pkcs12.Modern2026, key: key},
		{name: "legacyRC2", enc: pkcs12.LegacyRC2, key: key},
		{name: "legacyDES", enc: pkcs12.LegacyDES, key: key},
		{name: "rsa", enc: pkcs12.Modern, key: rsaKey, cert: 1, wantErr: "want P-256 ECDSA"},
		{name: "mismatch", enc: pkcs12.Modern, key: mustKey(t), wantErr: "does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cert[0]
			if tt.cert == 1 {
				c = rsaCert[0]
			}
			pfx, err := tt.enc.Encode(tt.key, c, nil, "pw")
			if err != nil {
				t.Fatal(err)
			}
			b, err := DecodeBundle(pfx, "pw")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !b.Key.Equal(tt.key.(*ecdsa.PrivateKey)) {
				t.Error("key differs")
			}
			if _, err := DecodeBundle(pfx, "bad"); !errors.Is(err, ErrPassword) {
				t.Errorf("wrong password: got %v, want ErrPassword", err)
			}
		})
	}
}

func TestLoadCertificates(t *testing.T) {
	dir := t.TempDir()
	der, err := os.ReadFile(vector("client-a.der"))
	if err != nil {
		t.Fatal(err)
	}
	pemBoth, err := os.ReadFile(vector("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pemBoth = append(pemBoth, pemCert(der)...)
	tests := []struct {
		name    string
		give    []byte
		want    int
		wantErr bool
	}{
		{name: "der", give: der, want: 1},
		{name: "pem two", give: pemBoth, want: 2},
		{name: "pem none", give: []byte("-----BEGIN FOO-----\n-----END FOO-----\n"), wantErr: true},
		{name: "garbage", give: []byte("hello"), wantErr: true},
		{name: "empty", give: nil, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(path, tt.give, 0o644); err != nil {
				t.Fatal(err)
			}
			certs, err := LoadCertificates(path)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), path) {
					t.Fatalf("got %v, want error naming %s", err, path)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(certs) != tt.want {
				t.Errorf("got %d certificates, want %d", len(certs), tt.want)
			}
		})
	}
}
