package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListenControlReplacesOnlyStaleSockets: a socket file left by a
// stopped sknockd is replaced, one that answers or a file that is not a
// socket is refused.
func TestListenControlReplacesOnlyStaleSockets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "control.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another sknockd answers there") {
		t.Errorf("second listener on a live socket: %v, want refused", err)
	}
	first.SetUnlinkOnClose(false)
	first.Close() // the file stays, as after a crash
	again, err := Listen(path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	again.Close()
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, nil, 0o600)
	if _, err := Listen(plain); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("a plain file at control.socket: %v, want refused", err)
	}
}
