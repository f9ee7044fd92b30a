package rules_test

import (
	"errors"
	"strings"
	"testing"

	"sknock/rules"
)

// TestRevokeRules: with a revoke mark, the chain resets or drops marked
// connections before the ESTABLISHED accept; without one there is no such
// rule; a revoke mark sharing a bit with the reject mark is refused.
func TestRevokeRules(t *testing.T) {
	c := designConfig(t)
	c.RevokeMark = 0x2
	for _, ipv6 := range []bool{false, true} {
		rs := joined(c.Rules(ipv6))
		reset := strings.Index(strings.Join(rs, "\n"), "-p tcp -m connmark --mark 0x2/0x2 -j REJECT --reject-with tcp-reset")
		drop := strings.Index(strings.Join(rs, "\n"), "-m connmark --mark 0x2/0x2 -j DROP")
		established := strings.Index(strings.Join(rs, "\n"), "--ctstate ESTABLISHED,RELATED -j ACCEPT")
		if reset < 0 || drop < 0 || !(reset < drop && drop < established) {
			t.Errorf("ipv6=%v: revoke rules missing or after the ESTABLISHED accept:\n%s", ipv6, strings.Join(rs, "\n"))
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
