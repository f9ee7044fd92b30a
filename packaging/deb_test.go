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
	"-rw-r--r-- ./usr/share/lintian/overrides/sknock",
	"-rw-r--r-- ./usr/share/man/man1/sknock.1.gz",
	"-rw-r--r-- ./usr/share/man/man5/sknock.yaml.5.gz",
	"-rw-r--r-- ./usr/share/man/man8/sknockd.8.gz",
	"-rwxr-xr-x ./usr/share/sknock/setup-rules.sh",
	"drwxr-x--- ./var/lib/sknock/",
}

// buildPackages runs `make deb rpm` into a directory of the test's and
// returns the packages' paths.
func buildPackages(t *testing.T) (deb, rpm string) {
	t.Helper()
	for _, tool := range []string{"make", "go", "dpkg-deb", "go-md2man"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (scripts/test.sh installs it)")
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", "..", "deb", "rpm", "PKGDIR="+dist, "DEB_VERSION=1.2.3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb rpm: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	if len(debs) != 1 || !strings.HasPrefix(filepath.Base(debs[0]), "sknock_1.2.3_") {
		t.Fatalf("make deb made %q, want one sknock_1.2.3_ARCH.deb", debs)
	}
	rpms, _ := filepath.Glob(filepath.Join(dist, "*.rpm"))
	if len(rpms) != 1 || !strings.HasPrefix(filepath.Base(rpms[0]), "sknock-1.2.3-1.") {
		t.Fatalf("make rpm made %q, want one sknock-1.2.3-1.ARCH.rpm", rpms)
	}
	return debs[0], rpms[0]
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
	deb, rpm := buildPackages(t)

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
	control, _ := os.ReadFile(filepath.Join(ctl, "control"))
	for _, want := range []string{"Depends: iptables", "Homepage: https://"} {
		if !strings.Contains(string(control), want) {
			t.Errorf("control lacks %q:\n%s", want, control)
		}
	}

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	for _, bin := range []string{"usr/sbin/sknockd", "usr/bin/sknock"} {
		if out := run(t, filepath.Join(root, bin), "--version"); !strings.Contains(out, "1.2.3") {
			t.Errorf("%s --version = %q, want 1.2.3", bin, out)
		}
	}
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/sknockd.service"))
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecStart=/usr/sbin/sknockd --config /etc/sknock/config.yaml", "RuntimeDirectory=sknock", "ExecReload=/usr/bin/sknock reload --socket /run/sknock/control.sock"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("sknockd.service lacks %q", want)
		}
	}
	if strings.Contains(string(unit), "/usr/local/") {
		t.Error("sknockd.service still names /usr/local/")
	}
	copyright, _ := os.ReadFile(filepath.Join(root, "usr/share/doc/sknock/copyright"))
	for _, want := range []string{"License: Apache-2.0", "Copyright: ", "/usr/share/common-licenses/Apache-2.0", "Source: https://"} {
		if !strings.Contains(string(copyright), want) {
			t.Errorf("copyright lacks %q:\n%s", want, copyright)
		}
	}
	rulesUnit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/sknockd-rules.service"))
	if !strings.Contains(string(rulesUnit), "/usr/sbin/sknockd --config /etc/sknock/config.yaml --apply-rules") {
		t.Errorf("sknockd-rules.service does not run the packaged sknockd:\n%s", rulesUnit)
	}

	t.Run("lintian", func(t *testing.T) {
		_, err := exec.LookPath("lintian")
		testenv.Require(t, err == nil, "lintian not installed (apt-get install lintian)")
		out, _ := exec.Command("lintian", "--tag-display-limit", "0", deb).CombinedOutput()
		warnings := 0
		for line := range strings.Lines(string(out)) {
			switch {
			case strings.HasPrefix(line, "E: "):
				t.Errorf("lintian: %s", strings.TrimSpace(line))
			case strings.HasPrefix(line, "W: "):
				warnings++
			}
		}
		if warnings > 2 {
			t.Errorf("lintian: %d warnings, want at most 2:\n%s", warnings, out)
		}
	})
	t.Run("rpmlint", func(t *testing.T) { checkRPM(t, rpm) })
	t.Run("maintainer scripts", func(t *testing.T) { checkScripts(t, ctl) })
}

// checkScripts runs the maintainer scripts with systemctl, sknockd,
// deb-systemd-helper, deb-systemd-invoke, iptables and ip6tables replaced
// by recorders on PATH, and /run/systemd/system, /etc/sknock and
// /var/lib/sknock moved into a directory of the test's. The recorders
// obey two variables: FAKE_SKNOCKD_FAILS (sknockd exits 2, as with a
// configuration that does not parse) and FAKE_NO_CHAIN (iptables has no
// chain SKNOCK).
func checkScripts(t *testing.T, ctl string) {
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	recorder := "#!/bin/sh\necho \"$(basename \"$0\") $*\" >>" + calls + "\n"
	fakes := map[string]string{
		"systemctl":          recorder,
		"deb-systemd-helper": recorder,
		"deb-systemd-invoke": recorder,
		"sknockd":            recorder + "[ -z \"$FAKE_SKNOCKD_FAILS\" ] || { echo 'config.yaml: line 3: bad' >&2; exit 2; }\n",
		// -S lists mangle's jumps and the backstop; -S SKNOCK says
		// whether the chain is there.
		"iptables": recorder + `case "$*" in
*"-S SKNOCK"*) [ -z "$FAKE_NO_CHAIN" ] ;;
*"-t mangle -S") echo "-P PREROUTING ACCEPT"; echo "-A PREROUTING -j SKNOCK"; echo "-A POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP" ;;
*"-t filter -S") echo "-A INPUT -j SKNOCK"; echo "-A INPUT -p tcp -j SKNOCKX" ;;
esac
`,
	}
	fakes["ip6tables"] = fakes["iptables"]
	for tool, script := range fakes {
		if err := os.WriteFile(filepath.Join(fake, tool), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sysdir := filepath.Join(fake, "run-systemd-system")
	etc := filepath.Join(fake, "etc-sknock")
	config := filepath.Join(etc, "config.yaml")
	state := filepath.Join(fake, "var-lib-sknock")
	for _, dir := range []string{sysdir, etc, state} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(config, []byte("gate:\n  chain: SKNOCK\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	paths := strings.NewReplacer("/run/systemd/system", sysdir, "/etc/sknock", etc, "/var/lib/sknock", state, "/usr/sbin/sknockd", filepath.Join(fake, "sknockd"))
	runScript := func(env []string, name string, args ...string) (out string, called []string) {
		t.Helper()
		os.Remove(calls)
		body, err := os.ReadFile(filepath.Join(ctl, name))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(fake, name)
		if err := os.WriteFile(path, []byte(paths.Replace(string(body))), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", append([]string{path}, args...)...)
		cmd.Env = append(append(os.Environ(), "PATH="+fake+":/usr/bin:/bin"), env...)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s %v: %v\n%s", name, args, err, b)
		}
		rec, _ := os.ReadFile(calls)
		return string(b), strings.Split(strings.TrimSpace(string(rec)), "\n")
	}
	has := func(called []string, words string) bool { return strings.Contains(strings.Join(called, " | "), words) }

	out, called := runScript(nil, "postinst", "configure")
	if !strings.Contains(out, "sknockd is NOT started") || has(called, "start") || has(called, "enable") {
		t.Errorf("postinst configure (fresh install): printed %q, called %q; want nothing started or enabled", out, called)
	}
	if !has(called, "systemctl daemon-reload") {
		t.Errorf("postinst configure: called %q, want a daemon-reload", called)
	}
	_, called = runScript(nil, "postinst", "configure", "1.2.2")
	// The recorder's is-active succeeds, so an upgrade checks the config
	// and restarts the running sknockd.
	if !has(called, "sknockd --config "+config+" --check | deb-systemd-invoke restart sknockd.service") {
		t.Errorf("postinst upgrade of a running sknockd: called %q, want --check then a restart", called)
	}

	out, called = runScript(nil, "prerm", "remove")
	if !has(called, "deb-systemd-invoke stop sknockd.service") || !has(called, "deb-systemd-helper disable sknockd.service sknockd-rules.service") ||
		!has(called, "sknockd --config "+config+" --remove-rules") || has(called, " -D ") {
		t.Errorf("prerm remove: printed %q, called %q; want sknockd stopped, disabled and its rules removed by sknockd", out, called)
	}
	if units, _ := os.ReadFile(filepath.Join(state, "enabled-units")); strings.Fields(string(units)) == nil {
		t.Errorf("prerm remove of enabled units did not remember them for a reinstall")
	}
	out, called = runScript([]string{"FAKE_SKNOCKD_FAILS=1"}, "prerm", "remove")
	for _, want := range []string{
		"iptables -w -t mangle -D PREROUTING -j SKNOCK",
		"iptables -w -t mangle -D POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP",
		"iptables -w -t mangle -F SKNOCK | iptables -w -t mangle -X SKNOCK",
		"iptables -w -t filter -D INPUT -j SKNOCK",
		"ip6tables -w -t filter -X SKNOCK",
	} {
		if !has(called, want) {
			t.Errorf("prerm remove with a refused config: called %q, want %q", called, want)
		}
	}
	if has(called, "SKNOCKX") || strings.Contains(out, "setup-rules.sh") || !strings.Contains(out, "removed chain SKNOCK and its jumps by name") {
		t.Errorf("prerm remove with a refused config printed %q (called %q); want the chain removed by name, no other chain touched, no advice naming a file the removal deletes", out, called)
	}
	out, called = runScript([]string{"FAKE_NO_CHAIN=1"}, "prerm", "remove")
	if has(called, "--remove-rules") || !strings.Contains(out, "nothing to remove") {
		t.Errorf("prerm remove with no rules in place: printed %q, called %q; want nothing removed, and said so", out, called)
	}
	if _, called = runScript(nil, "prerm", "upgrade", "1.2.4"); has(called, "stop") || has(called, "remove") || has(called, "disable") {
		t.Errorf("prerm upgrade: called %q, want nothing stopped (postinst restarts)", called)
	}

	os.WriteFile(filepath.Join(state, "enabled-units"), []byte(" sknockd.service sknockd-rules.service\n"), 0o644)
	out, called = runScript(nil, "postinst", "configure", "1.2.3")
	if !has(called, "deb-systemd-helper enable sknockd.service sknockd-rules.service") || !has(called, "deb-systemd-invoke start sknockd.service") ||
		!strings.Contains(out, "enabled again") {
		t.Errorf("postinst after a remove: printed %q, called %q; want the units enabled again and sknockd started", out, called)
	}
	if _, err := os.Stat(filepath.Join(state, "enabled-units")); !os.IsNotExist(err) {
		t.Errorf("postinst after a remove kept enabled-units: %v", err)
	}

	runScript(nil, "postrm", "remove")
	if _, err := os.Stat(state); err != nil {
		t.Errorf("postrm remove deleted the state directory: %v", err)
	}
	out, _ = runScript(nil, "postrm", "purge")
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("postrm purge kept the state directory: %v", err)
	}
	if !strings.Contains(out, "purged") || strings.Contains(out, "uncover") {
		t.Errorf("postrm purge printed %q, want what it purged", out)
	}
}

// checkRPM lints the .rpm with packaging/rpm/rpmlint.toml and checks
// what it holds. rpmlint unpacks with `rpm2cpio | cpio -id`, and nfpm's
// payload names its files with absolute paths, which GNU cpio would
// write into this machine's / (!): a cpio that refuses absolute names
// goes first on rpmlint's PATH.
func checkRPM(t *testing.T, rpm string) {
	for _, tool := range []string{"rpm", "rpmlint", "cpio"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed (apt-get install rpm rpmlint)")
	}
	cpio, _ := exec.LookPath("cpio")
	shim := t.TempDir()
	if err := os.WriteFile(filepath.Join(shim, "cpio"), []byte("#!/bin/sh\nexec "+cpio+" --no-absolute-filenames \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("rpmlint", "-c", "rpm/rpmlint.toml", rpm)
	cmd.Env = append(os.Environ(), "PATH="+shim+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), " 0 errors, 0 warnings") {
		t.Errorf("rpmlint: %v, want 0 errors and 0 warnings:\n%s", err, out)
	}
	files := run(t, "rpm", "-qpl", rpm)
	for _, want := range []string{"/usr/sbin/sknockd", "/usr/bin/sknock", "/lib/systemd/system/sknockd.service", "/usr/share/man/man8/sknockd.8.gz", "/usr/share/licenses/sknock/LICENSE"} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("rpm lacks %s:\n%s", want, files)
		}
	}
	if info := run(t, "rpm", "-qpi", rpm); !strings.Contains(info, "Apache-2.0") {
		t.Errorf("rpm -qpi does not name the licence:\n%s", info)
	}
}
