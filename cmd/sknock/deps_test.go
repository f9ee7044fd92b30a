package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// heavyDeps are packages the client must not link: each costs start-up
// time on every knock (zap drags in net/http and crypto/tls; together
// about 0.4 ms). gate and queue log nothing (they return decisions and
// counts for the daemon to log), and internal/control's server takes log
// callbacks, so the client can share them.
var heavyDeps = []string{"go.uber.org/zap", "net/http"}

func TestClientDoesNotLinkHeavyDependencies(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
		if _, err := exec.LookPath(goTool); err != nil {
			t.Skip("no go tool on PATH or in $GOROOT/bin to list sknock's dependencies with")
		}
	}
	out, err := exec.Command(goTool, "list", "-deps", "sknock/cmd/sknock").Output()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			t.Fatalf("go list -deps sknock/cmd/sknock: %v\n%s", err, exit.Stderr)
		}
		t.Fatalf("go list -deps sknock/cmd/sknock: %v", err)
	}
	linked := map[string][]string{} // heavy package → what of it is linked
	for dep := range strings.Lines(string(out)) {
		dep = strings.TrimSpace(dep)
		for _, heavy := range heavyDeps {
			if dep == heavy || strings.HasPrefix(dep, heavy+"/") {
				linked[heavy] = append(linked[heavy], dep)
			}
		}
	}
	for _, heavy := range heavyDeps {
		if deps := linked[heavy]; len(deps) > 0 {
			t.Errorf("sknock links %s (%s); find who imports it with: go list -deps -f '{{.ImportPath}}: {{.Imports}}' sknock/cmd/sknock", heavy, strings.Join(deps, ", "))
		}
	}
}
