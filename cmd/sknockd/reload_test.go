package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/queue"
)

// runDaemon starts serveWith over f and returns its logs, the SIGHUP
// channel and a stop function that returns the exit status.
func runDaemon(t *testing.T, cfg *Config, f *fakeOS) (*syncBuffer, chan<- os.Signal, func() int) {
	t.Helper()
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() { done <- serveWith(ctx, cfg, hup, logs, f.deps()) }()
	var once sync.Once
	code := -1
	stop := func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(10 * time.Second):
				t.Error("daemon did not stop")
			}
		})
		return code
	}
	t.Cleanup(func() { stop() })
	waitFor(t, logs, `"msg":"sknockd started"`, 1)
	return logs, hup, stop
}

// rewriteConfig replaces old with new in the config file at path.
func rewriteConfig(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("config %s has no %q", path, old)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(old), []byte(new), 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

// chainHas reports whether the fake IPv4 and IPv6 chains both hold a rule
// containing substr.
func chainHas(f *fakeOS, substr string) bool {
	has := func(rules []string) bool {
		return slices.ContainsFunc(rules, func(r string) bool { return strings.Contains(r, substr) })
	}
	return has(f.v4.Rules("SKNOCK")) && has(f.v6.Rules("SKNOCK"))
}

// TestDaemonReloadAppliesWholeConfig changes ports, policy, rate limit and
// open duration with one SIGHUP, then sends a broken file and a file that
// changes a restart-only key: the first is applied whole, the others are
// refused whole, naming the key, with the previous configuration in force.
func TestDaemonReloadAppliesWholeConfig(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	logs, hup, stop := runDaemon(t, &cfg, f)
	path := filepath.Join(dir, "config.yaml")
	if chainHas(f, "--dport 3000") {
		t.Fatal("tcp/3000 protected before the reload")
	}

	rewriteConfig(t, path, "protect: [tcp/2000]\n  policy: reject\n  hold_queue: 110\n",
		"protect: [tcp/2000, tcp/3000]\n  policy: drop\n  open_duration: 40s\n  hold_queue: 110\nknock:\n  rate_limit: 3/minute\n")
	hup <- os.Interrupt // any value: the channel stands for SIGHUP
	line := waitForLine(t, logs, `"msg":"config reloaded"`)
	for _, key := range []string{"gate.protect", "gate.policy", "gate.open_duration", "knock.rate_limit"} {
		if !strings.Contains(line, `"`+key+`"`) {
			t.Errorf("reload line does not list %s: %s", key, line)
		}
	}
	if !chainHas(f, "--dport 3000") || !chainHas(f, "--hashlimit-upto 3/minute") {
		t.Errorf("rules after the reload lack tcp/3000 or the new rate:\n%s", strings.Join(f.v4.Rules("SKNOCK"), "\n"))
	}
	if v := synVerdict(t, f, "198.18.0.3"); v.Verdict != queue.NFDrop {
		t.Errorf("SYN without a grant after switching to drop: %+v, want a drop", v)
	}

	before := f.v4.Rules("SKNOCK")
	for _, tt := range []struct {
		name, old, new, want string
	}{
		{"broken file", "policy: drop", "policy: maybe", "gate.policy"},
		{"unknown key", "policy: drop", "policy: drop\n  colour: blue", "colour"},
		{"restart-only key", "policy: drop", "policy: drop\n  queue: 200", "gate.queue changed; that takes a restart"},
		{"missing bundle", "server.pfx", "server.pfx.gone", "server.pkcs12"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path, good, 0o600)
			rewriteConfig(t, path, tt.old, tt.new)
			n := strings.Count(logs.String(), "reload refused")
			hup <- os.Interrupt
			waitFor(t, logs, "reload refused", n+1)
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if last := lines[len(lines)-1]; !strings.Contains(last, tt.want) {
				t.Errorf("refusal does not name %q: %s", tt.want, last)
			}
			if diff := cmp.Diff(before, f.v4.Rules("SKNOCK")); diff != "" {
				t.Errorf("a refused reload changed the rules (-before +after):\n%s", diff)
			}
			if v := synVerdict(t, f, "198.18.0.3"); v.Verdict != queue.NFDrop {
				t.Errorf("policy after a refused reload: %+v, want drop still", v)
			}
		})
	}
	if code := stop(); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// waitForLine waits for a log line containing substr and returns it.
func waitForLine(t *testing.T, logs *syncBuffer, substr string) string {
	t.Helper()
	waitFor(t, logs, substr, 1)
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}

// TestDaemonRestoresTamperedRules deletes the jump and flushes the chain
// behind the running daemon's back: it puts them back and logs what was
// wrong; when it cannot, it says so loudly.
func TestDaemonRestoresTamperedRules(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	logs, _, _ := runDaemon(t, &cfg, f)
	applied := f.v6.Rules("SKNOCK")

	f.v4.Delete("filter", "INPUT", "-j", "SKNOCK")
	waitFor(t, logs, `"msg":"rules restored","family":"iptables","problem":"INPUT has no jump to SKNOCK"`, 1)
	if got := f.v4.Rules("INPUT"); len(got) != 1 || got[0] != "-j SKNOCK" {
		t.Errorf("IPv4 INPUT after the repair = %q, want the jump", got)
	}

	f.v6.ClearChain("filter", "SKNOCK")
	waitFor(t, logs, `"family":"ip6tables","problem":"chain SKNOCK was flushed`, 1)
	if diff := cmp.Diff(applied, f.v6.Rules("SKNOCK")); diff != "" {
		t.Errorf("IPv6 chain after the repair (-want +got):\n%s", diff)
	}

	f.v4.SetFailOn(func(op, chain string, spec []string) error {
		if op == "Restore" {
			return errors.New("xtables lock held")
		}
		return nil
	})
	f.v4.ClearChain("filter", "SKNOCK")
	waitFor(t, logs, `rules damaged and NOT restored`, 1)
	waitFor(t, logs, `xtables lock held`, 1)
}

// TestRulesOnly covers --apply-rules and --remove-rules: they apply or
// remove the rule set and say so, and are refused while a sknockd runs.
func TestRulesOnly(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	var out, errOut bytes.Buffer
	if code := rulesOnly(&cfg, false, &out, &errOut, f.deps()); code != 0 {
		t.Fatalf("--apply-rules: exit %d: %s", code, errOut.String())
	}
	if !chainHas(f, "NFQUEUE --queue-num 101") || !strings.Contains(out.String(), "tcp/2000 closed") {
		t.Errorf("--apply-rules applied %q and said %q", f.v4.Rules("SKNOCK"), out.String())
	}

	f.lockErr = errors.New("another sknockd is already running in this network namespace (pid 42: sknockd --config x)")
	out.Reset()
	if code := rulesOnly(&cfg, true, &out, &errOut, f.deps()); code != 1 || !strings.Contains(errOut.String(), "--remove-rules refused: another sknockd is already running") {
		t.Errorf("--remove-rules while running: exit %d, stderr %q; want 1 naming the running sknockd", code, errOut.String())
	}
	if len(f.v4.Rules("SKNOCK")) == 0 {
		t.Error("a refused --remove-rules removed the rules")
	}

	f.lockErr = nil
	if code := rulesOnly(&cfg, true, &out, &errOut, f.deps()); code != 0 {
		t.Fatalf("--remove-rules: exit %d: %s", code, errOut.String())
	}
	if got := f.v4.Chains(); slices.Contains(got, "SKNOCK") || len(f.v4.Rules("INPUT")) != 0 {
		t.Errorf("after --remove-rules: chains %q, INPUT %q", got, f.v4.Rules("INPUT"))
	}
	if !strings.Contains(out.String(), "WITHOUT a grant") {
		t.Errorf("--remove-rules said %q; want a warning that the ports are uncovered", out.String())
	}
}

// TestConfigValuesCoverEveryKey keeps configValues (what a reload
// compares) and configKeys (what the file may hold) in step.
func TestConfigValuesCoverEveryKey(t *testing.T) {
	var keys []string
	for section, ks := range configKeys {
		for k := range ks {
			keys = append(keys, section+"."+k)
		}
	}
	var values []string
	for k := range configValues {
		values = append(values, k)
	}
	slices.Sort(keys)
	slices.Sort(values)
	if diff := cmp.Diff(keys, values); diff != "" {
		t.Errorf("configValues keys (-configKeys +configValues):\n%s", diff)
	}
	for k := range restartOnly {
		if configValues[k] == nil {
			t.Errorf("restart-only key %s is no key", k)
		}
	}
}

func TestChangedKeys(t *testing.T) {
	a := defaultConfig()
	b := defaultConfig()
	b.Rules.Protect = append(b.Rules.Protect, b.Rules.AlwaysAllow[0])
	b.KnockTolerance++
	b.Rules.KnockLast--
	if diff := cmp.Diff([]string{"gate.protect", "knock.ports", "knock.timestamp_tolerance"}, changedKeys(&a, &b)); diff != "" {
		t.Errorf("changedKeys (-want +got):\n%s", diff)
	}
	if got := changedKeys(&a, &a); len(got) != 0 {
		t.Errorf("changedKeys of equal configs = %q", got)
	}
}

// TestLockInstanceNamesTheHolder takes the single-instance lock under a
// name of the test's own and checks that a second taker is refused with
// the holder's pid and command line, and that closing frees it.
func TestLockInstanceNamesTheHolder(t *testing.T) {
	name := fmt.Sprintf("@sknockd-test-%d", os.Getpid())
	first, err := lockInstanceAt(name)
	if err != nil {
		t.Fatal(err)
	}
	_, err = lockInstanceAt(name)
	want := fmt.Sprintf("already running in this network namespace (pid %d: ", os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second lock: %v, want an error containing %q", err, want)
	}
	first.Close()
	again, err := lockInstanceAt(name)
	if err != nil {
		t.Fatalf("lock after close: %v", err)
	}
	again.Close()
}
