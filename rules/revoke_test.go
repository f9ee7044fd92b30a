package rules_test

import (
	"strings"
	"testing"
)

// TestNoMarkCarriesADecision: whatever RevokeMark says (deprecated), no
// rule of any chain matches a connmark, and the only packet-mark matches
// are the two signal bits at the gate's head, each cleared in the chain
// it goes to: a mark another tool sets further on means nothing to
// sknock.
func TestNoMarkCarriesADecision(t *testing.T) {
	c := designConfig(t)
	c.RevokeMark = 0x2
	c.RejectStray = true
	for _, ipv6 := range []bool{false, true} {
		all := joined(c.Rules(ipv6))
		all = append(all, joined(c.SynRules())...)
		all = append(all, joined(c.RejectRules(ipv6))...)
		for i, r := range all {
			if strings.Contains(r, "connmark") || strings.Contains(r, "CONNMARK") {
				t.Errorf("ipv6=%v: rule %q matches or sets a connmark", ipv6, r)
			}
			if strings.Contains(r, "-m mark") && !(i < 2 && (r == grantBack || r == rejectBack)) {
				t.Errorf("ipv6=%v: rule %d %q matches a packet mark", ipv6, i+1, r)
			}
		}
	}
	if got := joined(c.GrantRules()); len(got) != 1 || got[0] != "-j MARK --set-xmark 0x0/0x20000000" {
		t.Errorf("GrantRules = %q, want the grant bit cleared and nothing else", got)
	}
	if got := joined(c.RejectMarkRules()); len(got) == 0 || got[0] != "-j MARK --set-xmark 0x0/0x40000000" {
		t.Errorf("RejectMarkRules = %q, want the reject bit cleared first", got)
	}
}
