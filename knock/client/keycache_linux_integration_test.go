//go:build linux

package client

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sknock/internal/testenv"
	"sknock/pki"
)

// These tests write the real kernel keyring (the user keyring of the
// user running them), so they run only as integration tests: as root, or
// failing under SKNOCK_E2E=1 when not. The unit tests use fakeKeyring.

// requireKeyring skips (or, under SKNOCK_E2E=1, fails) when not root or
// when this kernel or sandbox refuses keyring calls, and returns a
// description unique to t whose entry is removed when t ends.
func requireKeyring(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	_, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_USER_KEYRING, true)
	testenv.Require(t, err == nil, fmt.Sprintf("the kernel keyring is not usable here: %v", err))
	desc := fmt.Sprintf("%stest-%d-%d", keyCacheDescPrefix, os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() { invalidate(desc) })
	return desc
}

// invalidate removes the entry named desc from the user keyring, if any.
func invalidate(desc string) {
	if id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", desc, 0); err == nil {
		unix.KeyctlInt(unix.KEYCTL_INVALIDATE, id, 0, 0, 0)
	}
}

func TestIntegrationKernelKeyringRoundTrip(t *testing.T) {
	desc := requireKeyring(t)
	kr := kernelKeyring{}
	if _, ok := kr.get(desc); ok {
		t.Fatal("found an entry before storing one")
	}
	payload := bytes.Repeat([]byte("k"), 5000) // more than get's first buffer
	if err := kr.put(desc, payload, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	got, ok := kr.get(desc)
	if !ok || !bytes.Equal(got, payload) {
		t.Fatalf("get = %d bytes, %v; want the %d stored", len(got), ok, len(payload))
	}

	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", desc, 0)
	if err != nil {
		t.Fatal(err)
	}
	// KEYCTL_DESCRIBE: "type;uid;gid;perm;description", perm in hex.
	d, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, id)
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.SplitN(d, ";", 5)
	perm, err := strconv.ParseUint(fields[3], 16, 32)
	if err != nil {
		t.Fatalf("describe %q: %v", d, err)
	}
	if perm != keyCachePerm {
		t.Errorf("permissions %08x, want %08x (nothing for group or others)", perm, keyCachePerm)
	}
	if exp := expiry(t, id); exp <= 0 || exp > 90*time.Second {
		t.Errorf("entry expires in %s, want within 90s", exp)
	}
}

// TestIntegrationKernelKeyringClampsTimeout: a ttl past the kernel's
// 32-bit seconds must not wrap: 2^32 s would become 0, an entry that never
// expires.
func TestIntegrationKernelKeyringClampsTimeout(t *testing.T) {
	desc := requireKeyring(t)
	if err := (kernelKeyring{}).put(desc, []byte("k"), time.Duration(1<<32)*time.Second); err != nil {
		t.Fatal(err)
	}
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", desc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if f := procKeysField(t, id, 3); f == "perm" {
		t.Error("a ttl of 2^32 s made an entry that never expires")
	}
}

// procKeysField returns field i of key id's line in /proc/keys.
func procKeysField(t *testing.T, id, i int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/keys")
	if err != nil {
		t.Skipf("no /proc/keys: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > i {
			if n, err := strconv.ParseUint(f[0], 16, 32); err == nil && int(n) == id {
				return f[i]
			}
		}
	}
	t.Fatalf("key %d not in /proc/keys", id)
	return ""
}

// expiry reads when key id expires from /proc/keys ("perm" for never,
// else "59s", "2m" and so on).
func expiry(t *testing.T, id int) time.Duration {
	t.Helper()
	f := procKeysField(t, id, 3)
	if f == "perm" {
		return -1
	}
	d, err := time.ParseDuration(f)
	if err != nil {
		t.Fatalf("/proc/keys expiry %q: %v", f, err)
	}
	return d
}

// TestIntegrationLoadUsesKernelKeyCache loads through the real keyring
// twice with Config.KeyCache and checks that the second Load came from it.
func TestIntegrationLoadUsesKernelKeyCache(t *testing.T) {
	requireKeyring(t)
	path := cacheBundle(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	desc := keyCacheDesc(data, cachePassword)
	t.Cleanup(func() { invalidate(desc) })
	serverCert := filepath.Join(filepath.Dir(path), "gatekeeper.pem")
	first, err := Load(path, cachePassword, serverCert, &Config{KeyCache: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p, ok := defaultKeyring.get(desc)
	if !ok {
		t.Fatal("Load with KeyCache stored nothing in the user keyring")
	}
	cached, err := decodeCachedKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if !cached.key.Equal(first.key) {
		t.Error("cached key differs from the loaded one")
	}
	// Put another bundle's key under this entry: if the second Load
	// returns that key, it came from the cache, not from decryption.
	other, err := pki.LoadBundle(cacheBundle(t), cachePassword)
	if err != nil {
		t.Fatal(err)
	}
	swapped, err := encodeCachedKey(unlockedKey{key: other.Key, cert: other.Cert.Raw})
	if err != nil {
		t.Fatal(err)
	}
	if err := defaultKeyring.put(desc, swapped, time.Minute); err != nil {
		t.Fatal(err)
	}
	second, err := Load(path, cachePassword, serverCert, &Config{KeyCache: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !second.key.Equal(other.Key) {
		t.Error("the second Load decrypted the bundle instead of using the cache entry")
	}
	third, err := Load(path, cachePassword, serverCert, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !third.key.Equal(first.key) {
		t.Error("Load without KeyCache used the cache")
	}
}
