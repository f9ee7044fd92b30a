package demotest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unitDirectives reads scripts/sknockd.service into directive → values
// (a directive may repeat).
func unitDirectives(t *testing.T) (map[string][]string, string) {
	t.Helper()
	return unitFileDirectives(t, "sknockd.service")
}

// unitFileDirectives reads scripts/NAME into directive → values.
func unitFileDirectives(t *testing.T, name string) (map[string][]string, string) {
	t.Helper()
	path := filepath.Join(moduleRoot(t), "scripts", name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", path, line)
		}
		d[k] = append(d[k], v)
	}
	return d, string(data)
}

// TestSystemdUnitContents checks the promises the unit makes, without
// systemd: the commands sknockd is run with, the reload and stop signals,
// and the hardening that matters for a root daemon.
func TestSystemdUnitContents(t *testing.T) {
	d, _ := unitDirectives(t)
	want := map[string]string{
		"ExecStart":               "/usr/local/bin/sknockd --config /etc/sknock/config.yaml",
		"ExecReload":              "/usr/local/bin/sknock reload --socket /run/sknock/control.sock",
		"KillSignal":              "SIGTERM",
		"TimeoutStopSec":          "10",
		"Restart":                 "on-failure",
		"CapabilityBoundingSet":   "CAP_NET_ADMIN CAP_NET_RAW",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"StateDirectory":          "sknock",
		"ReadWritePaths":          "-/run/xtables.lock",
		"RestrictAddressFamilies": "AF_NETLINK AF_UNIX AF_INET AF_INET6",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		if !contains(d[k], v) {
			t.Errorf("%s=%s missing (have %q)", k, v, d[k])
		}
	}
	if !contains(d["ExecStartPre"], "/usr/local/bin/sknockd --config /etc/sknock/config.yaml --check") {
		t.Errorf("ExecStartPre does not run sknockd --check: %q", d["ExecStartPre"])
	}
	for _, k := range []string{"After", "Wants"} {
		if !contains(d[k], "network-online.target") {
			t.Errorf("%s lacks network-online.target: %q", k, d[k])
		}
	}
	// sknockd must stay in the host's network namespace and see /proc/net.
	for _, k := range []string{"PrivateNetwork", "ProcSubset", "SecureBits"} {
		if len(d[k]) > 0 {
			t.Errorf("%s=%q would break sknockd or the iptables it runs", k, d[k])
		}
	}
}

// TestSystemdRulesUnitContents checks the boot step's unit: a oneshot
// that applies the rules only, before the network comes up, and stays
// "active" so that sknockd.service can order after it.
func TestSystemdRulesUnitContents(t *testing.T) {
	d, _ := unitFileDirectives(t, "sknockd-rules.service")
	want := map[string]string{
		"ExecStart":           "/usr/local/bin/sknockd --config /etc/sknock/config.yaml --apply-rules",
		"Type":                "oneshot",
		"RemainAfterExit":     "yes",
		"DefaultDependencies": "no",
		"Before":              "network-pre.target sknockd.service",
		"Wants":               "network-pre.target",
		"WantedBy":            "sysinit.target",
	}
	for k, v := range want {
		if !contains(d[k], v) {
			t.Errorf("%s=%s missing (have %q)", k, v, d[k])
		}
	}
	main, _ := unitDirectives(t)
	if !contains(main["After"], "sknockd-rules.service") || !contains(main["Wants"], "sknockd-rules.service") {
		t.Errorf("sknockd.service does not order after sknockd-rules.service: After %q, Wants %q", main["After"], main["Wants"])
	}
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// TestSystemdUnitVerify runs `systemd-analyze verify` on the unit, with the
// sknockd and sknock paths pointed at an existing executable (verify
// insists on it).
// Without systemd-analyze it skips, also under SKNOCK_E2E=1: the unit is
// packaging, not a kernel feature the integration tests depend on, and CI
// containers seldom carry systemd; TestSystemdUnitContents still runs.
func TestSystemdUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (apt-get install systemd); TestSystemdUnitContents covers the unit's directives")
	}
	_, text := unitDirectives(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "sknockd.service")
	text = strings.NewReplacer("/usr/local/bin/sknockd", self, "/usr/local/bin/sknock", self).Replace(text)
	if err := os.WriteFile(unit, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, analyze, "verify", "--man=no", unit).CombinedOutput()
	// verify also prints complaints about unrelated units of the host;
	// only lines about ours count.
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "sknockd.service") {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
	if out, err := exec.CommandContext(ctx, analyze, "security", "--offline=yes", unit).CombinedOutput(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("systemd-analyze security: %s", lines[len(lines)-1])
	}
}
