// Package packaging holds the test of the Debian package that `make deb`
// builds from nfpm.yaml and deb/ (see README.md).
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/testenv"
)

// wantFiles are the package's files and directories (dpkg-deb -c) with
// their modes, as the README's install section lists them, by path.
var wantFiles = []string{
	"drwxr-x--- ./etc/sknock/",
	"-rw-r----- ./etc/sknock/config.yaml",
	"-rw-r--r-- ./lib/systemd/system/sknockd-rules.service",
	"-rw-r--r-- ./lib/systemd/system/sknockd.service",
	"-rwxr-xr-x ./usr/bin/sknock",
	"-rwxr-xr-x ./usr/sbin/sknockd",
	"-rw-r--r-- ./usr/share/doc/sknock/README.md",
	"-rw-r--r-- ./usr/share/doc/sknock/changelog.gz",
	"-rw-r--r-- ./usr/share/doc/sknock/copyright",
	"-rwxr-xr-x ./usr/share/sknock/setup-rules.sh",
	"drwxr-x--- ./var/lib/sknock/",
}

// buildDeb runs `make deb` into a directory of the test's and returns
// the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"make", "go", "dpkg-deb"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", "..", "deb", "PKGDIR="+dist, "DEB_VERSION=1.2.3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	if len(debs) != 1 || !strings.HasPrefix(filepath.Base(debs[0]), "sknock_1.2.3_") {
		t.Fatalf("make deb made %q, want one sknock_1.2.3_ARCH.deb", debs)
	}
	return debs[0]
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebPackage builds the .deb and checks what the README says of it:
// its files, the conffile, binaries that run, the units' paths, lintian
// without errors, and maintainer scripts that start nothing on a fresh
// install and remove the rules on removal (run against recorders of
// systemctl and sknockd).
func TestDebPackage(t *testing.T) {
	deb := buildDeb(t)

	var got []string
	for line := range strings.Lines(run(t, "dpkg-deb", "-c", deb)) {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasSuffix(f[5], "/") && f[0] == "drwxr-xr-x" {
			continue // the standard directories
		}
		got = append(got, f[0]+" "+f[5])
	}
	byPath := func(a, b string) int {
		_, pa, _ := strings.Cut(a, " ")
		_, pb, _ := strings.Cut(b, " ")
		return strings.Compare(pa, pb)
	}
	slices.SortFunc(got, byPath)
	if diff := cmp.Diff(wantFiles, got); diff != "" {
		t.Errorf("package contents (-want +got):\n%s", diff)
	}

	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	if conf, _ := os.ReadFile(filepath.Join(ctl, "conffiles")); strings.TrimSpace(string(conf)) != "/etc/sknock/config.yaml" {
		t.Errorf("conffiles = %q, want /etc/sknock/config.yaml", conf)
	}
	if control, _ := os.ReadFile(filepath.Join(ctl, "control")); !strings.Contains(string(control), "Depends: iptables") {
		t.Errorf("control lacks Depends: iptables:\n%s", control)
	}

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	for _, bin := range []string{"usr/sbin/sknockd", "usr/bin/sknock"} {
		if out := run(t, filepath.Join(root, bin), "--version"); !strings.Contains(out, "1.2.3") {
			t.Errorf("%s --version = %q, want 1.2.3", bin, out)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/sknockd.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecStart=/usr/sbin/sknockd --config /etc/sknock/config.yaml", "RuntimeDirectory=sknock"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("sknockd.service lacks %q", want)
		}
	}
	if strings.Contains(string(unit), "/usr/local/") {
		t.Error("sknockd.service still names /usr/local/")
	}
	rulesUnit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/sknockd-rules.service"))
	if !strings.Contains(string(rulesUnit), "/usr/sbin/sknockd --config /etc/sknock/config.yaml --apply-rules") {
		t.Errorf("sknockd-rules.service does not run the packaged sknockd:\n%s", rulesUnit)
	}

	t.Run("lintian", func(t *testing.T) {
		_, err := exec.LookPath("lintian")
		testenv.Require(t, err == nil, "lintian not installed (apt-get install lintian)")
		out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
		for line := range strings.Lines(string(out)) {
			if strings.HasPrefix(line, "E: ") {
				t.Errorf("lintian: %s", strings.TrimSpace(line))
			}
		}
	})
	t.Run("maintainer scripts", func(t *testing.T) { checkScripts(t, ctl) })
}

// checkScripts runs the maintainer scripts with systemctl and sknockd
// replaced by recorders on PATH, and /run/systemd/system and
// /etc/sknock/config.yaml moved into a directory of the test's.
func checkScripts(t *testing.T, ctl string) {
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	for _, tool := range []string{"systemctl", "sknockd"} {
		script := "#!/bin/sh\necho \"" + tool + " $*\" >>" + calls + "\n"
		if err := os.WriteFile(filepath.Join(fake, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sysdir := filepath.Join(fake, "run-systemd-system")
	config := filepath.Join(fake, "config.yaml")
	if err := os.MkdirAll(sysdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(config, []byte("gate:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runScript := func(name string, args ...string) (out string, called []string) {
		t.Helper()
		os.Remove(calls)
		body, err := os.ReadFile(filepath.Join(ctl, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("/run/systemd/system", sysdir, "/etc/sknock/config.yaml", config, "/usr/sbin/sknockd", filepath.Join(fake, "sknockd")).Replace(string(body))
		path := filepath.Join(fake, name)
		if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", append([]string{path}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+fake+":/usr/bin:/bin")
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v\n%s", name, args, err, b)
		}
		rec, _ := os.ReadFile(calls)
		return string(b), strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(rec)), "\n", " | "))
	}
	has := func(called []string, words string) bool { return strings.Contains(strings.Join(called, " "), words) }

	out, called := runScript("postinst", "configure")
	if !strings.Contains(out, "sknockd is NOT started") || has(called, "start") || has(called, "enable") {
		t.Errorf("postinst configure (fresh install): printed %q, called %q; want nothing started or enabled", out, called)
	}
	if !has(called, "systemctl daemon-reload") {
		t.Errorf("postinst configure: called %q, want a daemon-reload", called)
	}
	_, called = runScript("postinst", "configure", "1.2.2")
	if has(called, "systemctl restart") {
		// The recorder's is-active succeeds, so an upgrade checks the
		// config and restarts the running sknockd.
		if !has(called, "sknockd --config "+config+" --check") {
			t.Errorf("postinst upgrade restarted without --check: %q", called)
		}
	} else {
		t.Errorf("postinst upgrade of a running sknockd: called %q, want --check then a restart", called)
	}
	_, called = runScript("prerm", "remove")
	if !has(called, "systemctl disable --now sknockd.service") || !has(called, "sknockd --config "+config+" --remove-rules") {
		t.Errorf("prerm remove: called %q, want sknockd stopped and its rules removed", called)
	}
	if _, called = runScript("prerm", "upgrade", "1.2.4"); len(called) != 0 {
		t.Errorf("prerm upgrade: called %q, want nothing (postinst restarts)", called)
	}
	state := filepath.Join(fake, "var-lib-sknock")
	os.MkdirAll(state, 0o750)
	body, _ := os.ReadFile(filepath.Join(ctl, "postrm"))
	os.WriteFile(filepath.Join(ctl, "postrm"), []byte(strings.ReplaceAll(string(body), "/var/lib/sknock", state)), 0o755)
	runScript("postrm", "remove")
	if _, err := os.Stat(state); err != nil {
		t.Errorf("postrm remove deleted the state directory: %v", err)
	}
	runScript("postrm", "purge")
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("postrm purge kept the state directory: %v", err)
	}
}
