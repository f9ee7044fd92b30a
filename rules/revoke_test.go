package rules_test

import (
	"errors"
	"strings"
	"testing"

	"sknock/rules"
)

// TestRevokeRules: with a revoke mark, the chain marks TCP segments of
// revoked connections for the filter chain to reset, returns them (with
// everything else carrying the reject mark) there, and drops the other
// packets of such connections, all before the ESTABLISHED return; without
// one there is no such rule; a revoke mark sharing a bit with the reject
// mark is refused.
func TestRevokeRules(t *testing.T) {
	c := designConfig(t)
	c.RevokeMark = 0x2
	for _, ipv6 := range []bool{false, true} {
		rs := joined(c.Rules(ipv6))
		all := strings.Join(rs, "\n")
		reset := strings.Index(all, "-p tcp -m connmark --mark 0x2/0x2 -j MARK --set-xmark 0x1/0x1")
		toFilter := strings.Index(all, marked)
		drop := strings.Index(all, "-m connmark --mark 0x2/0x2 -j DROP")
		established := strings.Index(all, "--ctstate ESTABLISHED,RELATED -j RETURN")
		if reset < 0 || toFilter < 0 || drop < 0 || !(reset < toFilter && toFilter < drop && drop < established) {
			t.Errorf("ipv6=%v: revoke rules missing, out of order or after the ESTABLISHED return:\n%s", ipv6, all)
		}
	}
	c.RevokeMark = 0
	if strings.Contains(strings.Join(joined(c.Rules(false)), "\n"), "connmark") {
		t.Error("a connmark rule without a revoke mark")
	}
	c.RevokeMark = 0x3 // shares 0x1 with the reject mark
	var cerr *rules.ConfigError
	if err := c.Validate(); !errors.As(err, &cerr) || cerr.Field != "RevokeMark" {
		t.Errorf("Validate with overlapping marks = %v, want a RevokeMark error", err)
	}
}
