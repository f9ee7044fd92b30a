package rules_test

import (
	"strings"
	"testing"
)

// TestRulesDropIPv4InIPv6Sources: the IPv6 chain drops v4-mapped and
// v4-compatible sources (but not :: or ::1) right after returning
// forwarded traffic (which is not the host's to gate), ahead of the SYN
// chain and the ESTABLISHED return, so no such packet addressed to the
// host is ever let through or queued; the IPv4 chain has no such rules.
func TestRulesDropIPv4InIPv6Sources(t *testing.T) {
	for _, tt := range []struct {
		name string
		ipv6 bool
		want []string // the chain's first rules
	}{
		{name: "ipv6", ipv6: true, want: []string{grantBack, rejectBack, forwarded, dropMapped, dropCompatible, synJump, established}},
		{name: "ipv4", ipv6: false, want: []string{grantBack, rejectBack, forwarded, synJump, established}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := designConfig(t)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range c.Rules(tt.ipv6) {
				got = append(got, strings.Join(r, " "))
			}
			if len(got) < len(tt.want) {
				t.Fatalf("Rules(%v) = %q, want it to begin with %q", tt.ipv6, got, tt.want)
			}
			for i, w := range tt.want {
				if got[i] != w {
					t.Errorf("Rules(%v) rule %d = %q, want %q", tt.ipv6, i+1, got[i], w)
				}
			}
			for _, r := range got[len(tt.want):] {
				if strings.Contains(r, "::") || strings.Contains(r, "iprange") {
					t.Errorf("Rules(%v) has %q further down, want the source drops first only", tt.ipv6, r)
				}
			}
		})
	}
}
