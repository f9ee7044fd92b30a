package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/queue"
)

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

// chainHas reports whether the fake IPv4 and IPv6 gate chains (in
// mangle) both hold a rule containing substr.
func chainHas(f *fakeOS, substr string) bool { return tableHas(f, "mangle", substr) }

// tableHas reports whether the fake IPv4 and IPv6 tables' chain SKNOCK
// both hold a rule containing substr.
func tableHas(f *fakeOS, table, substr string) bool {
	has := func(rules []string) bool {
		return slices.ContainsFunc(rules, func(r string) bool { return strings.Contains(r, substr) })
	}
	return has(f.v4.TableRules(table, "SKNOCK")) && has(f.v6.TableRules(table, "SKNOCK"))
}

// TestDaemonReloadAppliesWholeConfig changes ports, policy, rate limit and
// open duration with one SIGHUP, then sends a broken file and a file that
// changes a restart-only key: the first is applied whole, the others are
// refused whole, naming the key, with the previous configuration in force.
func TestDaemonReloadAppliesWholeConfig(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	path := filepath.Join(dir, "config.yaml")
	if chainHas(f, "--dport 3000") {
		t.Fatal("tcp/3000 protected before the reload")
	}

	rewriteConfig(t, path, "protect: [tcp/2000]\n  policy: reject\n  hold_queue: 110\n",
		"protect: [tcp/2000, tcp/3000]\n  policy: drop\n  open_duration: 40s\n  hold_queue: 110\n")
	rewriteConfig(t, path, "knock:\n", "knock:\n  rate_limit: 3/minute\n")
	d.hup <- os.Interrupt // any value: the channel stands for SIGHUP
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatalf("reload refused: %v", err)
	}
	if !chainHas(f, "--dport 3000") || !chainHas(f, "--hashlimit-upto 3/minute") {
		t.Errorf("rules after the reload lack tcp/3000 or the new rate:\n%s", strings.Join(f.v4.TableRules("mangle", "SKNOCK"), "\n"))
	}
	if v := synVerdict(t, f, "198.18.0.3"); v.Verdict != queue.NFDrop {
		t.Errorf("SYN without a grant after switching to drop: %+v, want a drop", v)
	}

	before := f.v4.TableRules("mangle", "SKNOCK")
	refusals := []struct {
		name, old, new, want string
	}{
		{"broken file", "policy: drop", "policy: maybe", "gate.policy"},
		{"unknown key", "policy: drop", "policy: drop\n  colour: blue", "colour"},
		{"restart-only key", "policy: drop", "policy: drop\n  queue: 200", "gate.queue changed; that takes a restart"},
		{"missing bundle", "server.pfx", "server.pfx.gone", "server.pkcs12"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path, good, 0o600)
			rewriteConfig(t, path, tt.old, tt.new)
			d.hup <- os.Interrupt
			if err := d.reloads.next(t, "reload"); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("reload: %v, want a refusal naming %q", err, tt.want)
			}
			if diff := cmp.Diff(before, f.v4.TableRules("mangle", "SKNOCK")); diff != "" {
				t.Errorf("a refused reload changed the rules (-before +after):\n%s", diff)
			}
			if v := synVerdict(t, f, "198.18.0.3"); v.Verdict != queue.NFDrop {
				t.Errorf("policy after a refused reload: %+v, want drop still", v)
			}
		})
	}
	if code := d.stop(); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}

	// The log is complete now; its lines are what an operator reads.
	reloaded := logLines(d.logs, `"msg":"config reloaded"`)
	if len(reloaded) != 1 {
		t.Fatalf("%d config reloaded lines, want 1:\n%s", len(reloaded), d.logs.String())
	}
	for _, key := range []string{"gate.protect", "gate.policy", "gate.open_duration", "knock.rate_limit"} {
		if !strings.Contains(reloaded[0], `"`+key+`"`) {
			t.Errorf("reload line does not list %s: %s", key, reloaded[0])
		}
	}
	refused := logLines(d.logs, "reload refused")
	if len(refused) != len(refusals) {
		t.Fatalf("%d reload refused lines, want %d:\n%s", len(refused), len(refusals), d.logs.String())
	}
	for i, tt := range refusals {
		if !strings.Contains(refused[i], tt.want) {
			t.Errorf("%s: refusal does not name %q: %s", tt.name, tt.want, refused[i])
		}
	}
}

// TestDaemonRestoresTamperedRules deletes jumps and flushes the chains
// of both tables behind the running daemon's back: it puts them back and
// logs what was wrong, naming table and chain; when it cannot, it says so
// loudly.
func TestDaemonRestoresTamperedRules(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	applied := f.v6.TableRules("mangle", "SKNOCK")
	// found waits for the watcher's next pass that found something and
	// returns its findings as "family: problem", and "; not restored: err"
	// after one that failed.
	found := func() []string {
		var got []string
		for _, f := range d.repairs.next(t, "repair") {
			s := f.Family + ": " + f.Problem
			if f.Err != nil {
				s += "; not restored: " + f.Err.Error()
			}
			got = append(got, s)
		}
		return got
	}

	f.v4.Delete("mangle", "PREROUTING", "-j", "SKNOCK")
	if diff := cmp.Diff([]string{"iptables: mangle PREROUTING has no jump to SKNOCK"}, found()); diff != "" {
		t.Errorf("repair after deleting the PREROUTING jump (-want +got):\n%s", diff)
	}
	if got := f.v4.TableRules("mangle", "PREROUTING"); len(got) != 1 || got[0] != "-j SKNOCK" {
		t.Errorf("IPv4 mangle PREROUTING after the repair = %q, want the jump", got)
	}

	f.v6.Delete("filter", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SKNOCK")
	if diff := cmp.Diff([]string{"ip6tables: filter FORWARD has no jump to SKNOCK"}, found()); diff != "" {
		t.Errorf("repair after deleting the FORWARD jump (-want +got):\n%s", diff)
	}
	if got := f.v6.Rules("FORWARD"); len(got) != 1 || got[0] != "-m conntrack --ctstate DNAT -j SKNOCK" {
		t.Errorf("IPv6 filter FORWARD after the repair = %q, want the jump", got)
	}

	f.v6.ClearChain("mangle", "SKNOCK")
	if got := found(); len(got) != 1 || !strings.HasPrefix(got[0], "ip6tables: chain SKNOCK (mangle) was flushed") || strings.Contains(got[0], "not restored") {
		t.Errorf("repair after flushing the IPv6 gate chain: %q, want ip6tables: chain SKNOCK (mangle) was flushed, restored", got)
	}
	if diff := cmp.Diff(applied, f.v6.TableRules("mangle", "SKNOCK")); diff != "" {
		t.Errorf("IPv6 gate chain after the repair (-want +got):\n%s", diff)
	}

	f.v4.SetFailOn(func(op, chain string, spec []string) error {
		if op == "Restore" {
			return errors.New("xtables lock held")
		}
		return nil
	})
	f.v4.ClearChain("filter", "SKNOCK")
	if got := found(); len(got) != 1 || !strings.HasPrefix(got[0], "iptables: chain SKNOCK (filter) was flushed") ||
		!strings.Contains(got[0], "; not restored: ") || !strings.HasSuffix(got[0], "xtables lock held") {
		t.Errorf("repair that cannot restore: %q, want iptables: chain SKNOCK (filter) was flushed, not restored: ...xtables lock held", got)
	}

	// The log is complete once the daemon stopped; its lines are what an
	// operator reads.
	d.stop()
	for _, want := range []string{
		`"msg":"rules restored","family":"iptables","problem":"mangle PREROUTING has no jump to SKNOCK"`,
		`"msg":"rules restored","family":"ip6tables","problem":"filter FORWARD has no jump to SKNOCK"`,
		`"msg":"rules restored","family":"ip6tables","problem":"chain SKNOCK (mangle) was flushed`,
	} {
		if len(logLines(d.logs, want)) != 1 {
			t.Errorf("want one %s line in the log:\n%s", want, d.logs.String())
		}
	}
	if loud := logLines(d.logs, "rules damaged and NOT restored"); len(loud) == 0 || !strings.Contains(loud[0], "xtables lock held") {
		t.Errorf("no loud line naming the error in the log:\n%s", d.logs.String())
	}
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
	if !chainHas(f, "NFQUEUE --queue-num 101") || !tableHas(f, "filter", "REJECT") || !strings.Contains(out.String(), "tcp/2000 closed") {
		t.Errorf("--apply-rules applied %q (mangle), %q (filter) and said %q", f.v4.TableRules("mangle", "SKNOCK"), f.v4.Rules("SKNOCK"), out.String())
	}

	f.lockErr = errors.New("another sknockd is already running in this network namespace (pid 42: sknockd --config x)")
	out.Reset()
	if code := rulesOnly(&cfg, true, &out, &errOut, f.deps()); code != 1 || !strings.Contains(errOut.String(), "--remove-rules refused: another sknockd is already running") {
		t.Errorf("--remove-rules while running: exit %d, stderr %q; want 1 naming the running sknockd", code, errOut.String())
	}
	if len(f.v4.TableRules("mangle", "SKNOCK")) == 0 || len(f.v4.Rules("SKNOCK")) == 0 {
		t.Error("a refused --remove-rules removed the rules")
	}

	f.lockErr = nil
	if code := rulesOnly(&cfg, true, &out, &errOut, f.deps()); code != 0 {
		t.Fatalf("--remove-rules: exit %d: %s", code, errOut.String())
	}
	for _, table := range []string{"mangle", "filter"} {
		if got := f.v4.TableChains(table); slices.Contains(got, "SKNOCK") {
			t.Errorf("after --remove-rules: %s chains %q", table, got)
		}
	}
	for _, hook := range []struct{ table, chain string }{{"mangle", "PREROUTING"}, {"mangle", "POSTROUTING"}, {"filter", "INPUT"}, {"filter", "FORWARD"}} {
		if got := f.v4.TableRules(hook.table, hook.chain); len(got) != 0 {
			t.Errorf("after --remove-rules: %s %s %q", hook.table, hook.chain, got)
		}
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
