package demotest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMakeInstall runs `make install` and `make uninstall` into a DESTDIR
// with a non-default PREFIX: the files land where they should, the unit
// names the installed binary, a second install keeps the operator's
// config.yaml, and uninstall leaves the configuration alone.
func TestMakeInstall(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	root := moduleRoot(t)
	dest, build := t.TempDir(), t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	makeRun := func(target string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, "make", "-C", root, target,
			"DESTDIR="+dest, "PREFIX=/opt/sknock", "BUILDDIR="+build, "VERSION=9.9.9-test")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
		return string(out)
	}
	at := func(p string) string { return filepath.Join(dest, p) }

	makeRun("install")
	for p, mode := range map[string]os.FileMode{
		"opt/sknock/bin/sknockd":                      0o755,
		"opt/sknock/bin/sknock":                       0o755,
		"opt/sknock/share/sknock/setup-rules.sh":      0o755,
		"opt/sknock/share/sknock/config.yaml.example": 0o644,
		"opt/sknock/share/sknock/README.md":           0o644,
		"etc/systemd/system/sknockd.service":          0o644,
		"etc/systemd/system/sknockd-rules.service":    0o644,
		"etc/sknock/config.yaml":                      0o640,
	} {
		fi, err := os.Stat(at(p))
		if err != nil {
			t.Errorf("after install: %v", err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", p, fi.Mode().Perm(), mode)
		}
	}
	out, err := exec.Command(at("opt/sknock/bin/sknockd"), "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "sknockd 9.9.9-test" {
		t.Errorf("installed sknockd --version = %q, %v; want the VERSION built in", out, err)
	}
	unit, _ := os.ReadFile(at("etc/systemd/system/sknockd.service"))
	if !strings.Contains(string(unit), "ExecStart=/opt/sknock/bin/sknockd --config /etc/sknock/config.yaml\n") ||
		strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("installed unit does not run /opt/sknock/bin/sknockd:\n%s", unit)
	}
	boot, _ := os.ReadFile(at("etc/systemd/system/sknockd-rules.service"))
	if !strings.Contains(string(boot), "ExecStart=/opt/sknock/bin/sknockd --config /etc/sknock/config.yaml --apply-rules\n") ||
		!strings.Contains(string(boot), "Before=network-pre.target") || strings.Contains(string(boot), "/usr/local/") {
		t.Errorf("installed boot unit does not apply the rules with /opt/sknock/bin/sknockd before the network:\n%s", boot)
	}

	// The operator edits the config; installing again must keep it.
	mine := []byte("# operator's own\n")
	if err := os.WriteFile(at("etc/sknock/config.yaml"), mine, 0o640); err != nil {
		t.Fatal(err)
	}
	if out := makeRun("install"); !strings.Contains(out, "kept existing") {
		t.Errorf("second install did not say it kept the config:\n%s", out)
	}
	if got, _ := os.ReadFile(at("etc/sknock/config.yaml")); string(got) != string(mine) {
		t.Errorf("install overwrote the operator's config.yaml: %q", got)
	}

	makeRun("uninstall")
	for _, p := range []string{"opt/sknock/bin/sknockd", "opt/sknock/bin/sknock", "opt/sknock/share/sknock", "etc/systemd/system/sknockd.service", "etc/systemd/system/sknockd-rules.service"} {
		if _, err := os.Stat(at(p)); !os.IsNotExist(err) {
			t.Errorf("after uninstall %s is still there (%v)", p, err)
		}
	}
	if got, _ := os.ReadFile(at("etc/sknock/config.yaml")); string(got) != string(mine) {
		t.Errorf("uninstall touched the operator's config.yaml: %q", got)
	}
}
