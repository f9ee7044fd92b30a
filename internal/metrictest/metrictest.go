// Package metrictest reads and lints a Prometheus exposition in tests:
// sknockd's unit tests (internal/daemon) and its root integration tests
// (cmd/sknockd) both scrape it.
package metrictest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Value returns the value of the sample line of body that starts with
// series (name and labels as exposed), or -1 when there is none.
func Value(body, series string) float64 {
	for line := range strings.Lines(body) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			var v float64
			fmt.Sscan(rest, &v)
			return v
		}
	}
	return -1
}

// PromtoolCheck runs `promtool check metrics` on an exposition, when
// promtool is installed (scripts/test.sh installs it; under SKNOCK_E2E=1
// its absence fails the test).
func PromtoolCheck(t testing.TB, body string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("SKNOCK_E2E") == "1" {
			t.Fatal("promtool not installed (apt-get install prometheus); scripts/test.sh installs it")
		}
		t.Log("promtool not installed: the exposition's lint is skipped")
		return
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
