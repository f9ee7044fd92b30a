// Package testenv holds what every test shares about its environment: the
// one helper that decides whether root-only integration tests run (skip,
// or fail under SKNOCK_E2E=1), and where the interop vectors are.
package testenv

import (
	"os"
	"testing"
)

// E2E reports whether SKNOCK_E2E=1 is set, which makes every skip of a
// root-only test a failure.
func E2E() bool { return os.Getenv("SKNOCK_E2E") == "1" }

// RequireRoot skips t when the process is not root, unless SKNOCK_E2E=1,
// in which case the missing privilege fails the test instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if E2E() {
		t.Fatal("SKNOCK_E2E=1 but not running as root: the integration tests need root")
	}
	t.Skip("integration test needs root (set SKNOCK_E2E=1 to make this a failure)")
}

// Require fails t under SKNOCK_E2E=1, or skips it otherwise, when ok is
// false; why says what is missing.
func Require(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if E2E() {
		t.Fatalf("SKNOCK_E2E=1 but %s", why)
	}
	t.Skip(why)
}
