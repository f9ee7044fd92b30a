package rules_test

import (
	"errors"
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

// checkApplied fails t unless tab holds exactly c's rules and INPUT holds
// the jump once, at position 1, followed by others.
func checkApplied(t *testing.T, tab *rulestest.Table, c rules.Config, ipv6 bool, others ...string) {
	t.Helper()
	if diff := cmp.Diff(joined(c.Rules(ipv6)), tab.Rules(c.Chain)); diff != "" {
		t.Errorf("chain %s (-want +got):\n%s", c.Chain, diff)
	}
	wantInput := append([]string{"-j " + c.Chain}, others...)
	if diff := cmp.Diff(wantInput, tab.Rules("INPUT")); diff != "" {
		t.Errorf("INPUT (-want +got):\n%s", diff)
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name string
		give func(*rulestest.Table) // the state Apply finds
		ipv6 bool
		want []string // INPUT after the jump
	}{
		{name: "fresh", give: func(*rulestest.Table) {}},
		{name: "fresh v6", give: func(*rulestest.Table) {}, ipv6: true},
		{
			name: "leftover chain and jump after a crash",
			give: func(tab *rulestest.Table) {
				tab.NewChain("filter", "SKNOCK")
				tab.Append("filter", "SKNOCK", "-p", "tcp", "-j", "ACCEPT")
				tab.Append("filter", "SKNOCK", "-p", "udp", "-j", "ACCEPT")
				tab.Insert("filter", "INPUT", 1, "-j", "SKNOCK")
			},
		},
		{
			name: "duplicate jumps from old runs",
			give: func(tab *rulestest.Table) {
				tab.NewChain("filter", "SKNOCK")
				tab.Append("filter", "INPUT", "-j", "SKNOCK")
				tab.Append("filter", "INPUT", "-i", "lo", "-j", "ACCEPT")
				tab.Append("filter", "INPUT", "-j", "SKNOCK")
				tab.Append("filter", "INPUT", "-j", "SKNOCK")
			},
			want: []string{"-i lo -j ACCEPT"},
		},
		{
			name: "jump pushed down by another tool",
			give: func(tab *rulestest.Table) {
				tab.NewChain("filter", "SKNOCK")
				tab.Append("filter", "INPUT", "-j", "SKNOCK")
				tab.Insert("filter", "INPUT", 1, "-i", "lo", "-j", "ACCEPT")
			},
			want: []string{"-i lo -j ACCEPT"},
		},
		{
			name: "empty leftover chain without jump",
			give: func(tab *rulestest.Table) {
				tab.NewChain("filter", "SKNOCK")
				tab.Append("filter", "INPUT", "-p", "icmp", "-j", "ACCEPT")
			},
			want: []string{"-p icmp -j ACCEPT"},
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
				checkApplied(t, tab, c, tt.ipv6, tt.want...)
			}
		})
	}
}

// TestApplyKeepsChainClosed checks that while Apply replaces a leftover
// chain, no intermediate state lacks the protect rules: every change leaves
// the complete new rule set, or the old one, in the chain.
func TestApplyKeepsChainClosed(t *testing.T) {
	tab := rulestest.New()
	c := designConfig(t)
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	newRules := strings.Join(joined(c.Rules(false)), "\n")
	var changes int
	tab.FailOn = func(op, chain string, spec []string) error {
		if chain != c.Chain || op == "Append" {
			return nil
		}
		changes++
		if !strings.Contains(strings.Join(tab.Rules(c.Chain), "\n"), newRules) {
			t.Errorf("before %s %v the chain lacks the complete rule set:\n%s", op, spec, strings.Join(tab.Rules(c.Chain), "\n"))
		}
		return nil
	}
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	if changes == 0 {
		t.Error("Apply over a leftover chain made no deletions; the test saw nothing")
	}
	checkApplied(t, tab, c, false)
}

func TestApplyRollsBack(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name      string
		leftover  bool
		failOp    string
		failMatch string // fail the op whose spec contains this
		wantErr   string
	}{
		{name: "fresh, append fails", failOp: "Append", failMatch: "NFQUEUE", wantErr: "append rule 6"},
		{name: "fresh, jump fails", failOp: "Insert", wantErr: "jump from INPUT"},
		{name: "leftover, append fails", leftover: true, failOp: "Append", failMatch: "length", wantErr: "append rule 11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := rulestest.New()
			c := designConfig(t)
			var before []string
			if tt.leftover {
				tab.NewChain("filter", c.Chain)
				tab.Append("filter", c.Chain, "-j", "DROP")
				tab.Insert("filter", "INPUT", 1, "-j", c.Chain)
				before = tab.Rules(c.Chain)
			}
			tab.FailOn = func(op, chain string, spec []string) error {
				if op == tt.failOp && strings.Contains(strings.Join(spec, " "), tt.failMatch) {
					return errBoom
				}
				return nil
			}
			err := rules.Apply(tab, c, false)
			if !errors.Is(err, errBoom) {
				t.Fatalf("Apply = %v, want boom", err)
			}
			if !contains(err.Error(), tt.wantErr) || !contains(err.Error(), "iptables") {
				t.Errorf("error %q does not name %q and the family", err, tt.wantErr)
			}
			if diff := cmp.Diff(before, tab.Rules(c.Chain)); diff != "" {
				t.Errorf("chain after rollback (-want +got):\n%s", diff)
			}
			var wantInput []string
			if tt.leftover {
				wantInput = []string{"-j " + c.Chain}
			}
			if diff := cmp.Diff(wantInput, tab.Rules("INPUT")); diff != "" {
				t.Errorf("INPUT after rollback (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRemove(t *testing.T) {
	tab := rulestest.New()
	c := designConfig(t)
	tab.Append("filter", "INPUT", "-p", "icmp", "-j", "ACCEPT")
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	tab.Append("filter", "INPUT", "-j", c.Chain) // a stray duplicate
	for i := range 2 {
		if err := rules.Remove(tab, c, false); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
		if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT"}, tab.Chains()); diff != "" {
			t.Errorf("chains (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"-p icmp -j ACCEPT"}, tab.Rules("INPUT")); diff != "" {
			t.Errorf("INPUT (-want +got):\n%s", diff)
		}
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
		t.Errorf("invalid config changed the table (-want +got):\n%s", diff)
	}
}

func TestApplyBothRollsBackIPv4(t *testing.T) {
	errBoom := errors.New("boom")
	c := designConfig(t)
	v4, v6 := rulestest.New(), rulestest.New()
	v6.FailOn = func(op, chain string, spec []string) error {
		if op == "Append" && strings.Contains(strings.Join(spec, " "), "icmp6") {
			return errBoom
		}
		return nil
	}
	err := rules.ApplyBoth(v4, v6, c)
	if !errors.Is(err, errBoom) || !contains(err.Error(), "ip6tables") {
		t.Fatalf("ApplyBoth = %v, want boom from ip6tables", err)
	}
	for name, tab := range map[string]*rulestest.Table{"v4": v4, "v6": v6} {
		if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT"}, tab.Chains()); diff != "" {
			t.Errorf("%s chains (-want +got):\n%s", name, diff)
		}
		if got := tab.Rules("INPUT"); len(got) != 0 {
			t.Errorf("%s INPUT = %q, want empty", name, got)
		}
	}
	v6.FailOn = nil
	if err := rules.ApplyBoth(v4, v6, c); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, v4, c, false)
	checkApplied(t, v6, c, true)
}

func TestApplyBothWithoutIPv6(t *testing.T) {
	c := designConfig(t)
	v4 := rulestest.New()
	// A kernel without IPv6 gets no ip6tables handle: IPv4 alone is applied.
	if err := rules.ApplyBoth(v4, nil, c); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, v4, c, false)
}
