//go:build linux

package rules_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/rules"
)

// The integration test re-executes its own binary inside a namespace, so
// that ApplyAll and RemoveAll drive the real iptables and ip6tables there
// through go-iptables, exactly as the daemon does. These variables tell the
// child what to do.
const (
	envOp     = "SKNOCK_RULES_TEST_OP"     // "apply" or "remove"
	envConfig = "SKNOCK_RULES_TEST_CONFIG" // a key of integrationConfigs
	envParent = "SKNOCK_RULES_TEST_PARENT" // the parent's network namespace
	envProbes = "SKNOCK_RULES_TEST_PROBES" // for "probe": "tcp ADDR:PORT,udp ..."
)

// integrationConfigs are the rule sets the integration test applies.
var integrationConfigs = map[string]func(testing.TB) rules.Config{
	"design": designConfig,
	"wide": func(t testing.TB) rules.Config {
		c := rules.DefaultConfig()
		c.Chain = "SKNOCK-wide_1"
		c.Mark = 0x100
		c.AlwaysAllow = specs(t, "tcp/22", "udp/53")
		c.Protect = specs(t, "tcp/*", "udp/*", "tcp/3000-3010")
		c.RejectStray = true
		c.KnockRateLimit = "20/second"
		return c
	},
}

func TestIntegrationApplyRemove(t *testing.T) {
	if op := os.Getenv(envOp); op != "" {
		runChildOp(t, op, os.Getenv(envConfig))
		return
	}
	testenv.RequireRoot(t)
	for _, tool := range []string{"iptables", "ip6tables", "iptables-save", "ip6tables-save", "ip"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
	for _, name := range []string{"design", "wide"} {
		t.Run(name, func(t *testing.T) { testApplyRemove(t, name) })
	}
}

func testApplyRemove(t *testing.T, name string) {
	c := integrationConfigs[name](t)
	ns := netns.New(t, "rul")

	runChild(t, ns, "apply", name)
	applied := save(t, ns)
	t.Logf("after Apply:\n%s", applied)
	checkSaved(t, ns, c)

	runChild(t, ns, "apply", name)
	if diff := cmp.Diff(applied, save(t, ns)); diff != "" {
		t.Errorf("second Apply changed the rules (-first +second):\n%s", diff)
	}

	// What a crashed older run leaves: a stale rule in each table's
	// chain, each jump (and the backstop) pushed below another tool's
	// rule, and a second one in each of PREROUTING, POSTROUTING, INPUT
	// and FORWARD.
	forwardJump := "-m conntrack --ctstate DNAT -j " + c.Chain
	backstop := strings.Join(c.Backstop(), " ")
	for _, family := range []string{"iptables", "ip6tables"} {
		for _, h := range []struct{ table, chain, jump string }{
			{"mangle", "PREROUTING", "-j " + c.Chain},
			{"mangle", "POSTROUTING", backstop},
			{"filter", "INPUT", "-j " + c.Chain},
			{"filter", "FORWARD", forwardJump},
		} {
			ns.MustRun(family, "-w", "-t", h.table, "-I", c.Chain, "1", "-p", "tcp", "-j", "ACCEPT")
			ns.MustRun(family, "-w", "-t", h.table, "-I", h.chain, "1", "-p", "tcp", "--dport", "9", "-j", "DROP")
			ns.MustRun(append([]string{family, "-w", "-t", h.table, "-A", h.chain}, strings.Fields(h.jump)...)...)
		}
	}
	runChild(t, ns, "apply", name)
	repaired := save(t, ns)
	var pairs []string
	for _, jump := range []string{"-A PREROUTING -j " + c.Chain, "-A POSTROUTING " + backstop, "-A INPUT -j " + c.Chain, "-A FORWARD " + forwardJump} {
		chain := strings.Fields(jump)[1]
		pairs = append(pairs, jump+"\n", jump+"\n-A "+chain+" -p tcp -m tcp --dport 9 -j DROP\n")
	}
	want := strings.NewReplacer(pairs...).Replace(applied)
	if diff := cmp.Diff(want, repaired); diff != "" {
		t.Errorf("Apply after a crash (-want +got):\n%s", diff)
	}

	for range 2 {
		runChild(t, ns, "remove", name)
		removed := save(t, ns)
		if strings.Contains(removed, c.Chain) || strings.Contains(removed, "NFQUEUE") {
			t.Errorf("after Remove, rules of ours are left:\n%s", removed)
		}
	}

	// An upgrade from the layout before the gate moved to mangle: the
	// gate chain in filter, jumped to first from INPUT. Apply ends with
	// exactly what it applied before (the other tool's rules stay).
	for _, family := range []string{"iptables", "ip6tables"} {
		ns.MustRun(family, "-w", "-N", c.Chain)
		ns.MustRun(family, "-w", "-A", c.Chain, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		ns.MustRun(family, "-w", "-A", c.Chain, "-p", "tcp", "--dport", "2000", "-j", "DROP")
		ns.MustRun(family, "-w", "-I", "INPUT", "1", "-j", c.Chain)
	}
	runChild(t, ns, "apply", name)
	if diff := cmp.Diff(want, save(t, ns)); diff != "" {
		t.Errorf("Apply over the filter-only layout (-want +got):\n%s", diff)
	}
	runChild(t, ns, "remove", name)

	// The script gives the same rules as Apply, also over a leftover chain.
	script, err := c.Script("apply")
	if err != nil {
		t.Fatal(err)
	}
	fresh := netns.New(t, "rus")
	for i := range 2 {
		fresh.MustRun("sh", "-c", script)
		if diff := cmp.Diff(applied, save(t, fresh)); diff != "" {
			t.Errorf("script run %d differs from Apply (-Apply +script):\n%s", i+1, diff)
		}
	}
	removeScript, err := c.Script("remove")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		fresh.MustRun("sh", "-c", removeScript)
		if removed := save(t, fresh); strings.Contains(removed, c.Chain) {
			t.Errorf("after the remove script, rules of ours are left:\n%s", removed)
		}
	}
}

// checkSaved checks what iptables-save and ip6tables-save list in ns
// after Apply: in mangle, PREROUTING holds only the jump to the chain,
// which holds as many rules as Rules returns, and POSTROUTING only the
// backstop; in filter, INPUT holds only the jump and FORWARD only the
// DNAT jump to the chain, which holds as many rules as RejectRules
// returns; no other chain of any table refers to the chain.
func checkSaved(t *testing.T, ns *netns.NS, c rules.Config) {
	t.Helper()
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		ipv6 := tool == "ip6tables-save"
		tables := map[string][]string{} // table → its "-A" lines
		table := ""
		for _, l := range strings.Split(labelByNumber(ns.MustRun(tool)), "\n") {
			switch {
			case strings.HasPrefix(l, "*"):
				table = l[1:]
			case strings.HasPrefix(l, "-A "):
				tables[table] = append(tables[table], l)
			}
		}
		want := map[string][]string{
			"mangle": {"-A PREROUTING -j " + c.Chain, "-A POSTROUTING " + strings.Join(c.Backstop(), " ")},
			"filter": {"-A INPUT -j " + c.Chain, "-A FORWARD -m conntrack --ctstate DNAT -j " + c.Chain},
		}
		wantRules := map[string]int{"mangle": len(c.Rules(ipv6)), "filter": len(c.RejectRules(ipv6))}
		for name, ls := range tables {
			var hooks []string
			chainRules := 0
			for _, l := range ls {
				switch {
				case strings.HasPrefix(l, "-A "+c.Chain+" "):
					chainRules++
				case strings.HasPrefix(l, "-A "+c.Chain+"-"): // helper chains
				case strings.Contains(l, c.Chain), strings.HasPrefix(l, "-A POSTROUTING "):
					hooks = append(hooks, l)
				}
			}
			if diff := cmp.Diff(want[name], hooks); diff != "" {
				t.Errorf("%s -t %s: jumps (-want +got):\n%s", tool, name, diff)
			}
			if chainRules != wantRules[name] {
				t.Errorf("%s -t %s: %d rules in %s, want %d", tool, name, chainRules, c.Chain, wantRules[name])
			}
		}
		for _, name := range []string{"mangle", "filter"} {
			if _, ok := tables[name]; !ok {
				t.Errorf("%s lists no %s table", tool, name)
			}
		}
	}
}

var counters = regexp.MustCompile(` \[\d+:\d+\]$`)

// save returns iptables-save and ip6tables-save output from inside ns
// without comment lines and counters.
// labelByNumber spells the reject label as the rule specs do: iptables
// quotes it, and names it when connlabel.conf does.
func labelByNumber(saved string) string {
	return strings.NewReplacer(`--label "`+rules.LabelName+`"`, "--label 127", `--label "127"`, "--label 127").Replace(saved)
}

func save(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables-save", "ip6tables-save"} {
		for _, l := range strings.Split(labelByNumber(ns.MustRun(tool)), "\n") {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			b.WriteString(counters.ReplaceAllString(l, "") + "\n")
		}
	}
	return b.String()
}

// runChild runs this test's binary inside ns to apply or remove the
// configuration name with go-iptables.
func runChild(t *testing.T, ns *netns.NS, op, name string, env ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := ns.Command(ctx, exe, "-test.run=^TestIntegrationApplyRemove$", "-test.count=1", "-test.v")
	parent, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), envOp+"="+op, envConfig+"="+name, envParent+"="+parent)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in netns %s: %v\n%s", op, name, ns.Name, err, out)
	}
	return string(out)
}

// runChildOp is the child's side of runChild. It refuses to touch the
// host's own network namespace.
func runChildOp(t *testing.T, op, name string) {
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if parent := os.Getenv(envParent); parent == "" || parent == self {
		t.Fatalf("refusing to %s rules: not inside a namespace of the test (own %s, parent %q)", op, self, parent)
	}
	if op == "probe" {
		for _, p := range strings.Split(os.Getenv(envProbes), ",") {
			network, addr, _ := strings.Cut(p, " ")
			fmt.Printf("PROBE %s %s\n", p, probe(network, addr))
		}
		return
	}
	config, ok := integrationConfigs[name]
	if !ok {
		t.Fatalf("unknown config %q", name)
	}
	c := config(t)
	switch op {
	case "apply":
		err = rules.ApplyAll(c)
	case "remove":
		err = rules.RemoveAll(c)
	default:
		t.Fatalf("unknown op %q", op)
	}
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
}

// TestIntegrationRejectLooksClosed checks the packet path of the rules in
// a namespace with no daemon: a packet carrying the reject signal bit
// (set here by a raw PREROUTING rule, before the gate in mangle
// PREROUTING, as the daemon's repeat verdict would before the gate sees
// it again) is labelled by the gate and gets from the filter chain
// exactly the answer of a closed port; a protected port whose gate queue nobody reads
// stays silent (fail closed), and so do short datagrams on the knock
// ports (the design example drops them, as its knocks are dropped);
// always-allowed ports get the kernel's own answers.
func TestIntegrationRejectLooksClosed(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"iptables", "ip6tables", "ip"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
	server, client := netns.New(t, "rsv"), netns.New(t, "rcl")
	netns.Link(t, server, []string{"198.18.0.1/24", "fd00:5e::1/64"}, client, []string{"198.18.0.2/24", "fd00:5e::2/64"})
	runChild(t, server, "apply", "design")
	for _, family := range []string{"iptables", "ip6tables"} {
		for _, p := range []string{"tcp/2000", "udp/8000"} {
			proto, port, _ := strings.Cut(p, "/")
			server.MustRun(family, "-w", "-t", "raw", "-A", "PREROUTING", "-p", proto, "--dport", port, "-j", "MARK", "--set-xmark", "0x40000000/0x40000000")
		}
	}
	want := map[string]string{
		"tcp %s:2000":  "refused", // protected, signalled: REJECT tcp-reset
		"tcp %s:4000":  "refused", // closed, unprotected: the kernel
		"tcp %s:3000":  "silent",  // protected, gate queue unread: dropped
		"tcp %s:22":    "refused", // always allowed, nothing listening
		"udp %s:8000":  "refused", // protected, signalled: port unreachable
		"udp %s:4001":  "refused", // closed, unprotected: the kernel
		"udp %s:12345": "silent",  // knock port, too short: dropped like a knock
	}
	var probes []string
	wantResults := map[string]string{}
	for _, host := range []string{"198.18.0.1", "[fd00:5e::1]"} {
		for p, result := range want {
			probe := fmt.Sprintf(p, host)
			probes = append(probes, probe)
			wantResults[probe] = result
		}
	}
	out := runChild(t, client, "probe", "", envProbes+"="+strings.Join(probes, ","))
	got := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "PROBE "); ok {
			i := strings.LastIndexByte(rest, ' ')
			got[rest[:i]] = rest[i+1:]
		}
	}
	if diff := cmp.Diff(wantResults, got); diff != "" {
		t.Errorf("probe results (-want +got):\n%s\nchild output:\n%s", diff, out)
	}
}

// probe sends one TCP SYN or one short UDP datagram to addr and says how
// the host answered: "open", "refused" (RST or ICMP port unreachable) or
// "silent"; anything else is reported as the error text.
func probe(network, addr string) string {
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err == nil && network == "udp" {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(time.Second))
		if _, err = conn.Write([]byte("probe")); err == nil {
			_, err = conn.Read(make([]byte, 16))
		}
	} else if err == nil {
		conn.Close()
		return "open"
	}
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "silent"
	}
	return strings.ReplaceAll(fmt.Sprint(err), " ", "_")
}

// TestIntegrationSetupRulesScript runs scripts/setup-rules.sh in a
// namespace with a stand-in sknockd that prints Config.Script, and checks
// that it applies what ApplyAll applies and removes it again.
func TestIntegrationSetupRulesScript(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"iptables", "ip6tables", "iptables-save", "ip6tables-save", "ip"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
	setup, err := filepath.Abs("../scripts/setup-rules.sh")
	if err != nil {
		t.Fatal(err)
	}
	c := designConfig(t)
	dir := t.TempDir()
	for _, action := range []string{"apply", "remove"} {
		script, err := c.Script(action)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, action+".sh"), []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fake := filepath.Join(dir, "sknockd")
	fakeText := "#!/bin/sh\n[ \"$1\" = --config ] && [ \"$3\" = --rules-script ] || exit 9\ncat " + dir + "/\"$4\".sh\n"
	if err := os.WriteFile(fake, []byte(fakeText), 0o755); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("# read by the stand-in only\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	reference := netns.New(t, "rsr")
	runChild(t, reference, "apply", "design")
	want := save(t, reference)

	ns := netns.New(t, "rss")
	run := func(action string, env ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := ns.Command(ctx, setup, action, config)
		cmd.Env = append(os.Environ(), append([]string{"SKNOCKD=" + fake}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("setup-rules.sh %s: %v\n%s", action, err, out)
		}
		return string(out)
	}
	if out := run("apply", "DRY_RUN=1"); !strings.Contains(out, "iptables-restore -w 5 --noflush") || !strings.Contains(out, "-A "+c.Chain+" ") {
		t.Errorf("DRY_RUN=1 printed no rules:\n%s", out)
	}
	if got := save(t, ns); strings.Contains(got, c.Chain) {
		t.Errorf("DRY_RUN=1 changed the rules:\n%s", got)
	}
	for range 2 {
		run("apply")
		if diff := cmp.Diff(want, save(t, ns)); diff != "" {
			t.Errorf("setup-rules.sh apply differs from ApplyAll (-ApplyAll +script):\n%s", diff)
		}
	}
	for range 2 {
		run("remove")
		if got := save(t, ns); strings.Contains(got, c.Chain) {
			t.Errorf("after setup-rules.sh remove, rules of ours are left:\n%s", got)
		}
	}
}
