package rules_test

import (
	"errors"
	"fmt"
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

// TestApplyIsOneTransaction checks that Apply over a leftover chain and a
// pushed-down jump changes the chain only through one Restore, so no
// packet meets a half-built chain; the only other change is the deletion
// of the surplus jump.
func TestApplyIsOneTransaction(t *testing.T) {
	tab := rulestest.New()
	c := designConfig(t)
	tab.NewChain("filter", c.Chain)
	tab.Append("filter", c.Chain, "-j", "DROP")
	tab.Append("filter", "INPUT", "-i", "lo", "-j", "ACCEPT")
	tab.Append("filter", "INPUT", "-j", c.Chain)
	var ops []string
	tab.FailOn = func(op, chain string, spec []string) error {
		ops = append(ops, op+" "+chain)
		return nil
	}
	if err := rules.Apply(tab, c, false); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"Restore ", "DeleteById INPUT"}, ops); diff != "" {
		t.Errorf("changes Apply made (-want +got):\n%s", diff)
	}
	checkApplied(t, tab, c, false, "-i lo -j ACCEPT")
}

// TestApplyFailsWhole checks that a failing transaction changes nothing
// and that the error names the family and the chain.
func TestApplyFailsWhole(t *testing.T) {
	errBoom := errors.New("boom")
	for _, leftover := range []bool{false, true} {
		t.Run(fmt.Sprintf("leftover=%v", leftover), func(t *testing.T) {
			tab := rulestest.New()
			c := designConfig(t)
			if leftover {
				tab.NewChain("filter", c.Chain)
				tab.Append("filter", c.Chain, "-j", "DROP")
				tab.Insert("filter", "INPUT", 1, "-j", c.Chain)
			}
			before := tab.Chains()
			beforeChain, beforeInput := tab.Rules(c.Chain), tab.Rules("INPUT")
			tab.FailOn = func(op, chain string, spec []string) error { return errBoom }
			err := rules.Apply(tab, c, true)
			if !errors.Is(err, errBoom) || !contains(err.Error(), "ip6tables") || !contains(err.Error(), c.Chain) {
				t.Fatalf("Apply = %v, want boom naming ip6tables and %s", err, c.Chain)
			}
			if diff := cmp.Diff(before, tab.Chains()); diff != "" {
				t.Errorf("chains (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(beforeChain, tab.Rules(c.Chain)); diff != "" {
				t.Errorf("chain (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(beforeInput, tab.Rules("INPUT")); diff != "" {
				t.Errorf("INPUT (-want +got):\n%s", diff)
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
