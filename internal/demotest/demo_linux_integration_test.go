package demotest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"sknock/internal/testenv"
)

// TestIntegrationDemo runs scripts/demo.sh for real: once to completion,
// then interrupted at several points the way a user or a supervisor would
// (Ctrl-C to its process group, SIGTERM to the script alone). Every run
// must leave nothing behind: no namespace, no process, no sandbox
// directory, and the host's iptables and ip6tables rules unchanged.
func TestIntegrationDemo(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"bash", "ip", "iptables", "iptables-save", "ip6tables-save", "go", "setsid", "timeout"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
	root := moduleRoot(t)

	t.Run("complete", func(t *testing.T) {
		r := runDemo(t, root, "", 0)
		if r.exit != 0 {
			t.Fatalf("demo.sh exited %d\n%s", r.exit, r.out)
		}
		for _, want := range []string{
			"[1/5] the service is hidden", "Connection refused",
			"[2/5] alice knocks", "tcp/2000 open",
			"[3/5] the service is reachable", "hello from the hidden service on 198.18.0.1:2000",
			"[4/5]", `"msg":"knock","verdict":"grant"`, `"subject":"CN=alice"`,
			"[5/5]", `"msg":"trust reloaded (SIGHUP)"`, `"crl_revoked":1`,
			"sknock knock exited 1", `"reason":"revoked"`,
			"sknockd stopped (exit status 0), keeping its rules; then sknockd --remove-rules removed them",
			"nothing left behind",
		} {
			if !strings.Contains(r.out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if regexp.MustCompile("\x1b\\[").MatchString(r.out) {
			t.Error("output has color escapes although stdout is not a terminal")
		}
		if t.Failed() {
			t.Logf("demo.sh output:\n%s", r.out)
		}
	})

	// Interruptions: after the trigger line appears, send sig.
	for _, tc := range []struct {
		name    string
		trigger string
		sig     syscall.Signal
		group   bool // to the process group, as Ctrl-C in a terminal does
		exit    int
		netns   bool // the namespaces were made
		stopped bool // sknockd was running and must have been stopped cleanly
	}{
		{"SIGINT during the build", " *  sandbox directory", syscall.SIGINT, true, 130, false, false},
		{"SIGINT after the network is made", " *  network:", syscall.SIGINT, true, 130, true, false},
		{"SIGINT with sknockd running", "[2/5]", syscall.SIGINT, true, 130, true, true},
		{"SIGTERM to the script while the grant runs out", "[5/5]", syscall.SIGTERM, false, 143, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sig := tc.sig
			if tc.group {
				sig = -sig // runDemo: negative means the process group
			}
			r := runDemo(t, root, tc.trigger, sig)
			if !r.triggered {
				t.Fatalf("demo.sh ended (exit %d) before printing %q\n%s", r.exit, tc.trigger, r.out)
			}
			if r.exit != tc.exit {
				t.Errorf("demo.sh exited %d after %v, want %d", r.exit, tc.sig, tc.exit)
			}
			wants := []string{"==> cleaning up", " *  removed "}
			if tc.netns {
				wants = append(wants, "deleted namespaces")
			}
			for _, want := range wants {
				if !strings.Contains(r.out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
			if tc.stopped && !strings.Contains(r.out, "sknockd stopped (exit status 0), keeping its rules; then sknockd --remove-rules removed them") {
				t.Error("sknockd was not stopped cleanly with SIGTERM")
			}
			if t.Failed() {
				t.Logf("demo.sh output:\n%s", r.out)
			}
		})
	}
}

type demoRun struct {
	out       string
	exit      int
	triggered bool
}

// runDemo runs `bash scripts/demo.sh` with TMPDIR in a fresh directory.
// When trigger is not empty, it sends sig once the output contains it (a
// negative sig goes to the script's whole process group). It then checks
// that the run left nothing behind.
func runDemo(t *testing.T, root, trigger string, sig syscall.Signal) demoRun {
	t.Helper()
	tmp := t.TempDir()
	before := hostRules(t)

	outFile, err := os.Create(filepath.Join(t.TempDir(), "demo.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = outFile, outFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second

	// A process started with SIGINT ignored (say, by a shell running the
	// tests in the background) passes that on, and bash cannot trap a
	// signal ignored at its start. Handling SIGINT here while the child
	// starts makes it start with the default disposition.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT)
	err = cmd.Start()
	signal.Stop(sigs)
	if err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var r demoRun
	var waitErr error
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case waitErr = <-done:
			break wait
		case <-tick.C:
			if trigger == "" || r.triggered {
				continue
			}
			if data, _ := os.ReadFile(outFile.Name()); bytes.Contains(data, []byte(trigger)) {
				r.triggered = true
				if sig < 0 {
					syscall.Kill(-pid, -sig)
				} else {
					syscall.Kill(pid, sig)
				}
			}
		}
	}
	data, _ := os.ReadFile(outFile.Name())
	r.out = string(data)
	if ctx.Err() != nil {
		t.Fatalf("demo.sh did not finish within the time limit\n%s", r.out)
	}
	r.exit = cmd.ProcessState.ExitCode()
	if r.exit < 0 {
		t.Fatalf("demo.sh was killed: %v\n%s", waitErr, r.out)
	}

	// Nothing left behind.
	if out, err := exec.Command("ip", "netns", "list").Output(); err != nil {
		t.Errorf("ip netns list: %v", err)
	} else {
		for _, line := range strings.Split(string(out), "\n") {
			name, _, _ := strings.Cut(line, " ")
			if strings.HasPrefix(name, "sknock-demo-") && strings.HasSuffix(name, fmt.Sprintf("-%d", pid)) {
				t.Errorf("namespace %s left behind", name)
			}
		}
	}
	if procs := processesMentioning(tmp); len(procs) > 0 {
		t.Errorf("processes left behind:\n%s", strings.Join(procs, "\n"))
		for _, p := range procs { // do not leak them into other tests
			var n int
			fmt.Sscan(p, &n)
			syscall.Kill(n, syscall.SIGKILL)
		}
	}
	if entries, _ := os.ReadDir(tmp); len(entries) > 0 {
		t.Errorf("sandbox left behind in TMPDIR: %v", entries)
	}
	if after := hostRules(t); after != before {
		t.Errorf("the host's iptables rules changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	return r
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

// hostRules is the host namespace's iptables-save and ip6tables-save
// output without comments and packet counters.
func hostRules(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		out, err := exec.Command(tool).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(counters.ReplaceAllString(line, "") + "\n")
			}
		}
	}
	return b.String()
}

// processesMentioning lists "PID cmdline" of processes whose command line
// contains s.
func processesMentioning(s string) []string {
	var found []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		data, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(data, []byte(s)) {
			continue
		}
		pid := filepath.Base(filepath.Dir(f))
		found = append(found, pid+" "+string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
	}
	return found
}
