package client

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/pki"
)

const cachePassword = "portknocking"

// fakeKeyring is a keyring in memory that counts its calls.
type fakeKeyring struct {
	entries    map[string][]byte
	ttls       map[string]time.Duration
	gets, puts int
}

func newFakeKeyring() *fakeKeyring {
	return &fakeKeyring{entries: map[string][]byte{}, ttls: map[string]time.Duration{}}
}

func (f *fakeKeyring) get(desc string) ([]byte, bool) {
	f.gets++
	p, ok := f.entries[desc]
	return p, ok
}

func (f *fakeKeyring) put(desc string, p []byte, ttl time.Duration) error {
	f.puts++
	f.entries[desc] = append([]byte(nil), p...)
	f.ttls[desc] = ttl
	return nil
}

// brokenKeyring fails every store and never finds anything.
type brokenKeyring struct{}

func (brokenKeyring) get(string) ([]byte, bool) { return nil, false }
func (brokenKeyring) put(string, []byte, time.Duration) error {
	return errors.New("keyring unavailable")
}

// cacheBundle issues a client bundle and returns its path; the server's
// certificate is gatekeeper.pem beside it.
func cacheBundle(t testing.TB) string {
	t.Helper()
	p := testpki.New(t, &testpki.Options{
		Server: "gatekeeper", Password: cachePassword,
		Clients: map[string]string{"alice": "tcp/2000"},
	})
	return p.Issued(t, "alice").PKCS12
}

func TestKeyCacheHitSkipsDecryption(t *testing.T) {
	path := cacheBundle(t)
	kr := newFakeKeyring()
	first, err := loadKeyCached(kr, path, cachePassword, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if kr.puts != 1 || len(kr.entries) != 1 {
		t.Fatalf("after the first load: %d puts, %d entries; want 1, 1", kr.puts, len(kr.entries))
	}
	for desc, ttl := range kr.ttls {
		if !strings.HasPrefix(desc, keyCacheDescPrefix) || ttl != time.Hour {
			t.Errorf("entry %q ttl %s; want prefix %q, ttl 1h", desc, ttl, keyCacheDescPrefix)
		}
	}
	second, err := loadKeyCached(kr, path, cachePassword, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if kr.puts != 1 {
		t.Errorf("second load stored again (%d puts): it did not use the cache", kr.puts)
	}
	if !second.key.Equal(first.key) || !bytes.Equal(second.cert, first.cert) {
		t.Error("cached key differs from the decrypted one")
	}
}

func TestKeyCacheWrongPasswordMisses(t *testing.T) {
	path := cacheBundle(t)
	kr := newFakeKeyring()
	if _, err := loadKeyCached(kr, path, cachePassword, time.Hour); err != nil {
		t.Fatal(err)
	}
	_, err := loadKeyCached(kr, path, "not the password", time.Hour)
	if !errors.Is(err, pki.ErrPassword) {
		t.Fatalf("wrong password with a live entry: err = %v, want ErrPassword", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the bundle", err)
	}
	if len(kr.entries) != 1 {
		t.Errorf("a wrong password stored an entry: %d entries", len(kr.entries))
	}
}

func TestKeyCacheReissuedBundleMisses(t *testing.T) {
	path := cacheBundle(t)
	kr := newFakeKeyring()
	if _, err := loadKeyCached(kr, path, cachePassword, time.Hour); err != nil {
		t.Fatal(err)
	}
	other := cacheBundle(t)
	data, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := loadKeyCached(kr, path, cachePassword, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pki.LoadBundle(other, cachePassword)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.cert, want.Cert.Raw) {
		t.Error("a replaced bundle file was served the old cached certificate")
	}
	if kr.puts != 2 {
		t.Errorf("puts = %d, want 2 (one per bundle)", kr.puts)
	}
}

func TestKeyCacheBadEntryIsAMiss(t *testing.T) {
	path := cacheBundle(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.DecodeBundle(data, cachePassword)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := encodeCachedKey(unlockedKey{key: good.Key, cert: good.Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.LoadBundle(cacheBundle(t), cachePassword)
	if err != nil {
		t.Fatal(err)
	}
	mismatched, err := encodeCachedKey(unlockedKey{key: other.Key, cert: good.Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string][]byte{
		"empty":              nil,
		"wrong version":      append([]byte{2}, payload[1:]...),
		"truncated key":      payload[:40],
		"truncated cert":     payload[:len(payload)-10],
		"key of another one": mismatched,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeCachedKey(p); err == nil {
				t.Fatal("decodeCachedKey accepted it")
			}
			kr := newFakeKeyring()
			kr.entries[keyCacheDesc(data, cachePassword)] = p
			b, err := loadKeyCached(kr, path, cachePassword, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.cert, good.Cert.Raw) || !b.key.Equal(good.Key) {
				t.Error("a bad entry was not replaced by the decrypted bundle")
			}
			if kr.puts != 1 {
				t.Errorf("puts = %d, want 1 (the bad entry replaced)", kr.puts)
			}
		})
	}
}

func TestKeyCacheBrokenKeyringStillLoads(t *testing.T) {
	path := cacheBundle(t)
	if _, err := loadKeyCached(brokenKeyring{}, path, cachePassword, time.Hour); err != nil {
		t.Fatalf("a keyring that fails made Load fail: %v", err)
	}
	if _, err := loadKeyCached(brokenKeyring{}, filepath.Join(t.TempDir(), "missing.pfx"), cachePassword, time.Hour); err == nil || !strings.Contains(err.Error(), "missing.pfx") {
		t.Errorf("missing bundle: err = %v, want one naming the file", err)
	}
}

func TestKeyCacheDescDependsOnBytesAndPassword(t *testing.T) {
	a := keyCacheDesc([]byte("bundle"), "pw")
	for _, other := range []string{keyCacheDesc([]byte("bundle2"), "pw"), keyCacheDesc([]byte("bundle"), "pw2"), keyCacheDesc([]byte("bundlep"), "w")} {
		if other == a {
			t.Errorf("two different (bundle, password) pairs share the entry %q", a)
		}
	}
	if !strings.HasPrefix(a, keyCacheDescPrefix) {
		t.Errorf("description %q lacks the prefix %q", a, keyCacheDescPrefix)
	}
}

// FuzzDecodeCachedKey: a keyring entry is bytes another process of the
// same user could have planted; decoding one must fail cleanly or give a
// key that matches its certificate's public key, and what decodes encodes
// back to an entry that decodes to the same key and certificate.
func FuzzDecodeCachedKey(f *testing.F) {
	path := cacheBundle(f)
	b, err := pki.LoadBundle(path, cachePassword)
	if err != nil {
		f.Fatal(err)
	}
	good, err := encodeCachedKey(unlockedKey{key: b.Key, cert: b.Cert.Raw})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:3])
	f.Add([]byte{keyCacheVersion, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, p []byte) {
		got, err := decodeCachedKey(p)
		if err != nil {
			return
		}
		pub, err := pki.CertificatePublicKey(got.cert)
		if err != nil || !got.key.PublicKey.Equal(pub) {
			t.Fatalf("decoded a key that does not match its certificate (%v)", err)
		}
		again, err := encodeCachedKey(got)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeCachedKey(again)
		if err != nil || !back.key.Equal(got.key) || !bytes.Equal(back.cert, got.cert) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
