package demotest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// moduleRoot returns the directory holding sknock's go.mod, walking up from
// the package directory the test runs in.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), "module sknock\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod of module sknock not found above the working directory")
		}
		dir = parent
	}
}
