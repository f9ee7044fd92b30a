package rules_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/rules"
	"sknock/rules/rulestest"
)

var _ rules.IPTables = (*rulestest.Table)(nil)

// joined renders rule specs the way rulestest.Table stores them.
func joined(specs [][]string) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = strings.Join(s, " ")
	}
	return out
}

// hooks are the built-in chains that must start with a rule of the rule
// set, by table: the jumps to the chain, and mangle POSTROUTING's
// backstop.
var hooks = []struct{ table, chain string }{
	{"mangle", "PREROUTING"},
	{"mangle", "POSTROUTING"},
	{"filter", "INPUT"},
	{"filter", "FORWARD"},
}

// jumpOf is the first rule of a built-in chain of hooks as stored: its
// jump to c's chain, or for POSTROUTING the backstop.
func jumpOf(c rules.Config, chain string) string {
	switch chain {
	case "FORWARD":
		return strings.Join(c.ForwardJump(), " ")
	case "POSTROUTING":
		return strings.Join(c.Backstop(), " ")
	}
	return strings.Join(c.Jump(), " ")
}

// checkApplied fails t unless tab holds exactly c's rule set: the gate
// rules in mangle, the reject rules in filter, each of PREROUTING
// (mangle), INPUT and FORWARD (filter) holding its jump once, at position
// 1, and POSTROUTING (mangle) the backstop, each followed by
// others[that chain].
func checkApplied(t *testing.T, tab *rulestest.Table, c rules.Config, ipv6 bool, others map[string][]string) {
	t.Helper()
	if diff := cmp.Diff(joined(c.Rules(ipv6)), tab.TableRules("mangle", c.Chain)); diff != "" {
		t.Errorf("mangle chain %s (-want +got):\n%s", c.Chain, diff)
	}
	if diff := cmp.Diff(joined(c.RejectRules(ipv6)), tab.TableRules("filter", c.Chain)); diff != "" {
		t.Errorf("filter chain %s (-want +got):\n%s", c.Chain, diff)
	}
	for _, h := range hooks {
		want := append([]string{jumpOf(c, h.chain)}, others[h.chain]...)
		if diff := cmp.Diff(want, tab.TableRules(h.table, h.chain)); diff != "" {
			t.Errorf("%s %s (-want +got):\n%s", h.table, h.chain, diff)
		}
	}
	// The jumps are in their own tables only.
	for _, h := range []struct{ table, chain string }{{"mangle", "INPUT"}, {"mangle", "FORWARD"}} {
		if got := tab.TableRules(h.table, h.chain); len(got) != 0 {
			t.Errorf("%s %s = %q, want it untouched (empty)", h.table, h.chain, got)
		}
	}
}

// oldLayout puts in tab what sknock installed before the gate moved to
// mangle: the gate chain in filter (accepting, rejecting there) with
// INPUT jumping to it first, and no mangle chain.
func oldLayout(tab *rulestest.Table, c rules.Config) {
	tab.NewChain("filter", c.Chain)
	for _, r := range []string{
		"-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
		"-i lo -j ACCEPT",
		"-p tcp -m tcp --dport 22 -j ACCEPT",
		"-p tcp -m mark --mark 0x1/0x1 -j REJECT --reject-with tcp-reset",
		"-p tcp -m tcp --dport 2000 --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 101",
		"-p tcp -m tcp --dport 2000 -j DROP",
	} {
		tab.Append("filter", c.Chain, strings.Fields(r)...)
	}
	tab.Insert("filter", "INPUT", 1, c.Jump()...)
}

func TestApply(t *testing.T) {
	tests := []struct {
		name string
		give func(*rulestest.Table) // the state Apply finds
		ipv6 bool
		want map[string][]string // each hook's rules after the jump
	}{
		{name: "fresh", give: func(*rulestest.Table) {}},
		{name: "fresh v6", give: func(*rulestest.Table) {}, ipv6: true},
		{
			name: "leftover chains and jumps after a crash",
			give: func(tab *rulestest.Table) {
				for _, table := range []string{"mangle", "filter"} {
					tab.NewChain(table, "SKNOCK")
					tab.Append(table, "SKNOCK", "-p", "tcp", "-j", "ACCEPT")
					tab.Append(table, "SKNOCK", "-p", "udp", "-j", "ACCEPT")
				}
				tab.Insert("mangle", "PREROUTING", 1, "-j", "SKNOCK")
				tab.Insert("mangle", "POSTROUTING", 1, designConfig(t).Backstop()...)
				tab.Insert("filter", "INPUT", 1, "-j", "SKNOCK")
				tab.Insert("filter", "FORWARD", 1, "-m", "conntrack", "--ctstate", "DNAT", "-j", "SKNOCK")
			},
		},
		{
			name: "upgrade from the filter-only layout",
			give: func(tab *rulestest.Table) { oldLayout(tab, designConfig(t)) },
		},
		{
			name: "duplicate jumps from old runs",
			give: func(tab *rulestest.Table) {
				for _, h := range hooks {
					tab.NewChain(h.table, "SKNOCK") // fails harmlessly the second time
					jump := strings.Fields(jumpOf(designConfig(t), h.chain))
					tab.Append(h.table, h.chain, jump...)
					tab.Append(h.table, h.chain, "-i", "lo", "-j", "ACCEPT")
					tab.Append(h.table, h.chain, jump...)
					tab.Append(h.table, h.chain, jump...)
				}
			},
			want: map[string][]string{
				"PREROUTING":  {"-i lo -j ACCEPT"},
				"POSTROUTING": {"-i lo -j ACCEPT"},
				"INPUT":       {"-i lo -j ACCEPT"},
				"FORWARD":     {"-i lo -j ACCEPT"},
			},
		},
		{
			name: "jumps pushed down by another tool",
			give: func(tab *rulestest.Table) {
				for _, h := range hooks {
					tab.NewChain(h.table, "SKNOCK")
					tab.Append(h.table, h.chain, strings.Fields(jumpOf(designConfig(t), h.chain))...)
					tab.Insert(h.table, h.chain, 1, "-i", "lo", "-j", "ACCEPT")
				}
			},
			want: map[string][]string{
				"PREROUTING":  {"-i lo -j ACCEPT"},
				"POSTROUTING": {"-i lo -j ACCEPT"},
				"INPUT":       {"-i lo -j ACCEPT"},
				"FORWARD":     {"-i lo -j ACCEPT"},
			},
		},
		{
			name: "one jump pushed down, the others in place",
			give: func(tab *rulestest.Table) {
				c := designConfig(t)
				if err := rules.Apply(tab, c, false); err != nil {
					t.Fatal(err)
				}
				tab.Insert("filter", "FORWARD", 1, "-j", "DOCKER-USER")
			},
			want: map[string][]string{"FORWARD": {"-j DOCKER-USER"}},
		},
		{
			name: "empty leftover chains without jumps",
			give: func(tab *rulestest.Table) {
				tab.NewChain("mangle", "SKNOCK")
				tab.NewChain("filter", "SKNOCK")
				tab.Append("filter", "INPUT", "-p", "icmp", "-j", "ACCEPT")
				tab.Append("filter", "FORWARD", "-j", "DOCKER-USER")
				tab.Append("mangle", "PREROUTING", "-j", "MARK", "--set-xmark", "0x10/0x10")
				tab.Append("mangle", "POSTROUTING", "-o", "eth0", "-j", "ACCEPT")
			},
			want: map[string][]string{
				"PREROUTING":  {"-j MARK --set-xmark 0x10/0x10"},
				"POSTROUTING": {"-o eth0 -j ACCEPT"},
				"INPUT":       {"-p icmp -j ACCEPT"},
				"FORWARD":     {"-j DOCKER-USER"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := rulestest.New()
			tt.give(tab)
			c := designConfig(t)
			for range 2 {
				if err := rules.Apply(tab, c, tt.ipv6); err != nil {
					t.Fatalf("Apply: %v", err)
				}
				checkApplied(t, tab, c, tt.ipv6, tt.want)
			}
		})
	}
}

// recordOps makes tab record every change (and Save) as "op chain", the
// chain being the table's name for Restore and Save.
func recordOps(tab *rulestest.Table) *[]string {
	var ops []string
	tab.FailOn = func(op, chain string, spec []string) error {
		ops = append(ops, op+" "+chain)
		return nil
	}
	return &ops
}

// TestApplyIsOneTransactionPerTable checks that Apply over leftover
// chains and pushed-down jumps changes each table's chains only through
// Restores of that table, so no packet meets a half-built chain: one for
// mangle, and for filter the bridge (old and new rules) and then the new
// rules; the only other changes are the deletions of the surplus jumps
// and the old layout's backstop.
func TestApplyIsOneTransactionPerTable(t *testing.T) {
	tab := rulestest.New()
	c := designConfig(t)
	for _, h := range hooks {
		tab.NewChain(h.table, c.Chain)
		tab.Append(h.table, c.Chain, "-j", "DROP")
		tab.Append(h.table, h.chain, "-i", "lo", "-j", "ACCEPT")
		tab.Append(h.table, h.chain, strings.Fields(jumpOf(c, h.chain))...)
	}
	ops := recordOps(tab)
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	// The filter chain exists: the bridge, the gate, the filter chain.
	want := []string{"Restore filter", "DeleteById INPUT", "DeleteById FORWARD", "Restore mangle", "DeleteById PREROUTING", "DeleteById POSTROUTING", "Restore filter"}
	if diff := cmp.Diff(want, *ops); diff != "" {
		t.Errorf("changes Apply made (-want +got):\n%s", diff)
	}
	tab.FailOn = nil
	checkApplied(t, tab, c, false, map[string][]string{
		"PREROUTING":  {"-i lo -j ACCEPT"},
		"POSTROUTING": {"-i lo -j ACCEPT"},
		"INPUT":       {"-i lo -j ACCEPT"},
		"FORWARD":     {"-i lo -j ACCEPT"},
	})
}

// TestApplyOrder checks the order of the transactions, so that there is
// never a moment without gate or refusal: the filter chain (refusal) goes
// in before the gate that labels packets for it; on an upgrade (from the
// layout where the filter chain was the gate, or refused by a packet
// mark) the filter chain first holds its old rules and the new ones (the
// bridge), then the gate is replaced, and only then the filter chain. A
// failure of a later transaction leaves the earlier ones in place and its
// own table untouched, which is safe either way.
func TestApplyOrder(t *testing.T) {
	errBoom := errors.New("boom")
	c := designConfig(t)
	restores := func(ops []string) []string {
		var out []string
		for _, op := range ops {
			if strings.HasPrefix(op, "Restore ") {
				out = append(out, op)
			}
		}
		return out
	}

	t.Run("fresh: filter before mangle", func(t *testing.T) {
		tab := rulestest.New()
		ops := recordOps(tab)
		if err := rules.Apply(tab, c, false); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"Restore filter", "Restore mangle"}, restores(*ops)); diff != "" {
			t.Errorf("transactions (-want +got):\n%s", diff)
		}
		tab.FailOn = nil
		checkApplied(t, tab, c, false, nil)
	})

	t.Run("fresh, the gate fails: rejection only", func(t *testing.T) {
		tab := rulestest.New()
		tab.FailOn = func(op, chain string, spec []string) error {
			if op == "Restore" && chain == "mangle" {
				return errBoom
			}
			return nil
		}
		err := rules.Apply(tab, c, false)
		if !errors.Is(err, errBoom) || !contains(err.Error(), "iptables") || !contains(err.Error(), "mangle") {
			t.Fatalf("Apply = %v, want boom naming iptables and mangle", err)
		}
		if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT", "POSTROUTING", "PREROUTING"}, tab.TableChains("mangle")); diff != "" {
			t.Errorf("mangle chains (-want +got):\n%s", diff)
		}
		for _, chain := range []string{"PREROUTING", "POSTROUTING"} {
			if got := tab.TableRules("mangle", chain); len(got) != 0 {
				t.Errorf("mangle %s = %q, want it untouched", chain, got)
			}
		}
		if diff := cmp.Diff(joined(c.RejectRules(false)), tab.Rules(c.Chain)); diff != "" {
			t.Errorf("filter chain (-want +got):\n%s", diff)
		}
	})

	t.Run("upgrade: bridge, then mangle, then the filter chain holds only the refusal rules", func(t *testing.T) {
		tab := rulestest.New()
		oldLayout(tab, c)
		ops := recordOps(tab)
		if err := rules.Apply(tab, c, false); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{"Restore filter", "Restore mangle", "Restore filter"}, restores(*ops)); diff != "" {
			t.Errorf("transactions (-want +got):\n%s", diff)
		}
		tab.FailOn = nil
		checkApplied(t, tab, c, false, nil)
		if diff := cmp.Diff(joined(c.RejectRules(false)), tab.Rules(c.Chain)); diff != "" {
			t.Errorf("old filter chain after the upgrade (-want +got):\n%s", diff)
		}
	})

	t.Run("upgrade, the gate fails: the bridge holds the old gate and the new refusal", func(t *testing.T) {
		tab := rulestest.New()
		oldLayout(tab, c)
		before := tab.Rules(c.Chain)
		tab.FailOn = func(op, chain string, spec []string) error {
			if op == "Restore" && chain == "mangle" {
				return errBoom
			}
			return nil
		}
		err := rules.Apply(tab, c, false)
		if !errors.Is(err, errBoom) || !contains(err.Error(), "mangle") {
			t.Fatalf("Apply = %v, want boom naming the mangle table", err)
		}
		tab.FailOn = nil
		if diff := cmp.Diff(append(before, joined(c.RejectRules(false))...), tab.Rules(c.Chain)); diff != "" {
			t.Errorf("filter chain (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"-j " + c.Chain}, tab.Rules("INPUT")); diff != "" {
			t.Errorf("filter INPUT (-want +got):\n%s", diff)
		}
	})
}

// TestApplyFailsWhole checks that a failing transaction changes nothing
// and that the error names the family, the table and the chain.
func TestApplyFailsWhole(t *testing.T) {
	errBoom := errors.New("boom")
	for _, leftover := range []bool{false, true} {
		t.Run(fmt.Sprintf("leftover=%v", leftover), func(t *testing.T) {
			tab := rulestest.New()
			c := designConfig(t)
			if leftover {
				for _, h := range hooks {
					tab.NewChain(h.table, c.Chain)
					tab.Append(h.table, c.Chain, "-j", "DROP")
					tab.Insert(h.table, h.chain, 1, strings.Fields(jumpOf(c, h.chain))...)
				}
			}
			type snapshot map[string][]string
			snap := func() snapshot {
				s := snapshot{}
				for _, table := range []string{"mangle", "filter"} {
					s[table] = tab.TableChains(table)
					for _, chain := range tab.TableChains(table) {
						s[table+" "+chain] = tab.TableRules(table, chain)
					}
				}
				return s
			}
			before := snap()
			tab.FailOn = func(op, chain string, spec []string) error { return errBoom }
			err := rules.Apply(tab, c, true)
			if !errors.Is(err, errBoom) || !contains(err.Error(), "ip6tables") || !contains(err.Error(), c.Chain) {
				t.Fatalf("Apply = %v, want boom naming ip6tables and %s", err, c.Chain)
			}
			// The first transaction, filter's, failed.
			first := "filter"
			if !contains(err.Error(), first) {
				t.Errorf("Apply = %v, want it to name the %s table", err, first)
			}
			tab.FailOn = nil
			if diff := cmp.Diff(before, snap()); diff != "" {
				t.Errorf("tables (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHashlimitNameFollowsRate checks that a changed rate limit gets a
// new kernel table name (the kernel keeps an existing table's rate) and an
// unchanged one keeps its name.
func TestHashlimitNameFollowsRate(t *testing.T) {
	name := func(c rules.Config, ipv6 bool) string {
		t.Helper()
		for _, r := range c.Rules(ipv6) {
			for i, arg := range r {
				if arg == "--hashlimit-name" {
					if n := r[i+1]; len(n) > 15 || !strings.HasPrefix(n, "sknock_") {
						t.Fatalf("hashlimit name %q: want sknock_ and at most 15 characters", n)
					}
					return r[i+1]
				}
			}
		}
		t.Fatal("no hashlimit rule")
		return ""
	}
	c := designConfig(t)
	c.KnockRateLimit = "20/second"
	d := c
	d.KnockRateLimit = "1/minute"
	if name(c, false) == name(d, false) {
		t.Errorf("rates %s and %s share the table %s", c.KnockRateLimit, d.KnockRateLimit, name(c, false))
	}
	if name(c, false) == name(c, true) {
		t.Errorf("IPv4 and IPv6 share the table %s", name(c, false))
	}
	same := designConfig(t)
	same.KnockRateLimit = c.KnockRateLimit
	if name(c, false) != name(same, false) {
		t.Errorf("the same rate got the names %s and %s", name(c, false), name(same, false))
	}
}

// TestRemove checks that Remove takes out both tables' chains, all three
// jumps and the backstop, duplicates included, and leaves every other
// rule; a second Remove finds nothing to do.
func TestRemove(t *testing.T) {
	for _, layout := range []string{"current", "old"} {
		t.Run(layout, func(t *testing.T) {
			tab := rulestest.New()
			c := designConfig(t)
			tab.Append("filter", "INPUT", "-p", "icmp", "-j", "ACCEPT")
			tab.Append("filter", "FORWARD", "-j", "DOCKER-USER")
			tab.Append("mangle", "PREROUTING", "-j", "MARK", "--set-xmark", "0x10/0x10")
			tab.Append("mangle", "POSTROUTING", "-o", "eth0", "-j", "ACCEPT")
			if layout == "old" {
				oldLayout(tab, c)
			} else {
				if err := rules.Apply(tab, c, false); err != nil {
					t.Fatal(err)
				}
				for _, h := range hooks { // stray duplicates
					tab.Append(h.table, h.chain, strings.Fields(jumpOf(c, h.chain))...)
				}
			}
			for i := range 2 {
				if err := rules.Remove(tab, c, false); err != nil {
					t.Fatalf("Remove #%d: %v", i+1, err)
				}
				if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT"}, tab.TableChains("filter")); diff != "" {
					t.Errorf("filter chains (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT", "POSTROUTING", "PREROUTING"}, tab.TableChains("mangle")); diff != "" {
					t.Errorf("mangle chains (-want +got):\n%s", diff)
				}
				for _, w := range []struct {
					table, chain string
					want         []string
				}{
					{"filter", "INPUT", []string{"-p icmp -j ACCEPT"}},
					{"filter", "FORWARD", []string{"-j DOCKER-USER"}},
					{"mangle", "PREROUTING", []string{"-j MARK --set-xmark 0x10/0x10"}},
					{"mangle", "POSTROUTING", []string{"-o eth0 -j ACCEPT"}},
				} {
					if diff := cmp.Diff(w.want, tab.TableRules(w.table, w.chain)); diff != "" {
						t.Errorf("%s %s (-want +got):\n%s", w.table, w.chain, diff)
					}
				}
			}
		})
	}
}

// TestRemoveFailsNamingTable checks that a failing step of Remove names
// the family, the table and the step.
func TestRemoveFailsNamingTable(t *testing.T) {
	errBoom := errors.New("boom")
	tab := rulestest.New()
	c := designConfig(t)
	if err := rules.Apply(tab, c, true); err != nil {
		t.Fatal(err)
	}
	tab.FailOn = func(op, chain string, spec []string) error {
		if op == "Delete" && chain == "FORWARD" {
			return errBoom
		}
		return nil
	}
	err := rules.Remove(tab, c, true)
	if !errors.Is(err, errBoom) || !contains(err.Error(), "ip6tables") || !contains(err.Error(), "filter FORWARD") {
		t.Fatalf("Remove = %v, want boom naming ip6tables and filter FORWARD", err)
	}
	// The gate went first and is gone; the filter chain stays whole.
	if got := tab.TableChains("mangle"); slices.Contains(got, c.Chain) {
		t.Errorf("mangle chains = %q, want %s removed", got, c.Chain)
	}
	if diff := cmp.Diff(joined(c.RejectRules(true)), tab.Rules(c.Chain)); diff != "" {
		t.Errorf("filter chain (-want +got):\n%s", diff)
	}
}

func TestRemoveBadChain(t *testing.T) {
	c := rules.DefaultConfig()
	c.Chain = "no such chain"
	if err := rules.Remove(rulestest.New(), c, false); err == nil {
		t.Error("Remove with an invalid chain name succeeded")
	}
}

func TestApplyInvalidConfig(t *testing.T) {
	tab := rulestest.New()
	c := rules.DefaultConfig()
	c.Mark = 0
	var cerr *rules.ConfigError
	if err := rules.Apply(tab, c, false); !errors.As(err, &cerr) {
		t.Fatalf("Apply = %v, want a *ConfigError", err)
	}
	if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT"}, tab.Chains()); diff != "" {
		t.Errorf("invalid config changed the filter table (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT", "POSTROUTING", "PREROUTING"}, tab.TableChains("mangle")); diff != "" {
		t.Errorf("invalid config changed the mangle table (-want +got):\n%s", diff)
	}
}

// TestRemoveBackstopWithoutGateChain checks that Remove takes out mangle
// POSTROUTING's backstop also when the gate chain is gone already (another
// tool deleted it, with its jump): the backstop does not refer to the
// chain, so nothing else ever removes it.
func TestRemoveBackstopWithoutGateChain(t *testing.T) {
	tab := rulestest.New()
	c := designConfig(t)
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	tab.Delete("mangle", "PREROUTING", c.Jump()...)
	tab.ClearChain("mangle", c.Chain)
	tab.DeleteChain("mangle", c.Chain)
	if err := rules.Remove(tab, c, false); err != nil {
		t.Fatal(err)
	}
	if got := tab.TableRules("mangle", "POSTROUTING"); len(got) != 0 {
		t.Errorf("after Remove without a gate chain, mangle POSTROUTING still holds %q", got)
	}
}
