package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPKILifecycle drives renew, reissue after revoke, list, revoke
// --serial and crl --show/--until through the command line; openssl
// verify accepts every certificate written (when openssl is on PATH).
func TestPKILifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	t.Setenv(passwordEnv, "pw")
	must := func(args ...string) string {
		t.Helper()
		got := runPKIForTest(args...)
		if got.code != 0 {
			t.Fatalf("sknock pki %s: exit %d, %s", strings.Join(args, " "), got.code, got.stderr)
		}
		return got.stdout
	}
	verify := func(name string) {
		t.Helper()
		openssl, err := exec.LookPath("openssl")
		if err != nil {
			return
		}
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, "ca.pem"), filepath.Join(dir, name+".pem")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify %s: %v %s", name, err, out)
		}
	}
	must("init", "--dir", dir)
	must("server", "--dir", dir, "--name", "gate1")
	must("client", "--dir", dir, "--name", "alice", "--allow", "tcp/22,udp/8000", "--days", "30")
	must("client", "--dir", dir, "--name", "carol", "--allow", "tcp/2000")

	out := must("renew", "--dir", dir, "--name", "alice", "--days", "365")
	m := regexp.MustCompile(`^renewed client alice: serial (\d+), valid until \S+, allowing tcp/22,udp/8000; wrote .*alice.pfx .* the old serial (\d+) is kept as .*alice\.(\d+)\.pfx\n$`).FindStringSubmatch(out)
	if m == nil || m[2] != m[3] {
		t.Fatalf("renew said %q", out)
	}
	newSerial, oldSerial := m[1], m[2]
	verify("alice")
	out = must("renew", "--dir", dir, "--name", "gate1", "--keep-key")
	if !strings.HasPrefix(out, "renewed server gate1: serial ") || strings.Contains(out, "allowing") {
		t.Errorf("server renew said %q", out)
	}
	verify("gate1")
	if got := runPKIForTest("renew", "--dir", dir, "--name", "gate1", "--keep-key", "--revoke-old"); got.code != 2 || !strings.Contains(got.stderr, "exclude each other") {
		t.Errorf("--keep-key --revoke-old: %+v", got)
	}

	// carol, revoked, issued again under the same name.
	if got := runPKIForTest("client", "--dir", dir, "--name", "carol", "--allow", "tcp/2000"); got.code != 1 || !strings.Contains(got.stderr, "renew it with 'sknock pki renew', or revoke it") {
		t.Errorf("issuing carol twice: %+v", got)
	}
	must("revoke", "--dir", dir, "--name", "carol")
	must("client", "--dir", dir, "--name", "carol", "--allow", "tcp/2000")
	verify("carol")
	must("revoke", "--dir", dir, "--name", "alice", "--serial", oldSerial)

	out = must("list", "--dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	want := []string{
		`^NAME +KIND +SERIAL +NOT AFTER +STATUS +AUTHORISATION$`,
		`^gate1 +server +\d+ +\d{4}-\d\d-\d\d +renewed +-$`,
		`^alice +client +` + oldSerial + ` +\d{4}-\d\d-\d\d +revoked +tcp/22,udp/8000$`,
		`^carol +client +\d+ +\d{4}-\d\d-\d\d +revoked +tcp/2000$`,
		`^alice +client +` + newSerial + ` +\d{4}-\d\d-\d\d +valid +tcp/22,udp/8000$`,
		`^gate1 +server +\d+ +\d{4}-\d\d-\d\d +valid +-$`,
		`^carol +client +\d+ +\d{4}-\d\d-\d\d +valid +tcp/2000$`,
	}
	if len(lines) != len(want) {
		t.Fatalf("list:\n%s\nwant %d lines", out, len(want))
	}
	for i, w := range want {
		if !regexp.MustCompile(w).MatchString(lines[i]) {
			t.Errorf("list line %d = %q, want %s", i, lines[i], w)
		}
	}
	if js := must("list", "--dir", dir, "--json"); strings.Count(js, "\n") != 6 || !strings.Contains(js, `"serial":"`+newSerial+`"`) {
		t.Errorf("list --json:\n%s", js)
	}

	until := time.Now().Add(20 * 24 * time.Hour).UTC().Format(time.DateOnly)
	must("crl", "--dir", dir, "--until", until)
	out = must("crl", "--dir", dir, "--show")
	if !strings.Contains(out, "number 1, ") || !strings.Contains(out, "next update "+until+"T00:00:00Z") || !strings.Contains(out, ", 2 revoked") {
		t.Errorf("crl --show said %q", out)
	}
	for _, bad := range [][]string{
		{"crl", "--dir", dir, "--show", "--days", "3"},
		{"crl", "--dir", dir, "--until", until, "--days", "3"},
		{"crl", "--dir", dir, "--until", "tomorrow"},
	} {
		if got := runPKIForTest(bad...); got.code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", bad, got.code, got.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "carol.pem")); err != nil {
		t.Error(err)
	}
}

func TestPKIInitIntermediate(t *testing.T) {
	root, sub := filepath.Join(t.TempDir(), "ca"), filepath.Join(t.TempDir(), "ca-ops")
	t.Setenv(passwordEnv, "pw")
	for _, step := range []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"init", "--dir", root}, 0, "wrote"},
		{[]string{"init", "--dir", sub, "--parent", root}, 2, "--name is required with --parent"},
		{[]string{"init", "--dir", sub, "--name", "ops"}, 2, "give --parent too"},
		{[]string{"init", "--dir", sub, "--parent", root, "--name", "ops"}, 0, "intermediate CA ops under"},
		{[]string{"client", "--dir", sub, "--name", "dave", "--allow", "tcp/2000"}, 0, "wrote"},
		{[]string{"list", "--dir", root}, 0, "ops"},
	} {
		got := runPKIForTest(step.args...)
		if got.code != step.wantCode || !strings.Contains(got.stdout+got.stderr, step.want) {
			t.Errorf("%v: exit %d, %q %q; want %d and %q", step.args, got.code, got.stdout, got.stderr, step.wantCode, step.want)
		}
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(sub, "ca.pem"), filepath.Join(sub, "dave.pem")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify dave: %v %s", err, out)
		}
	}
}
