package rules

import "testing"

// TestGrantPassesNothing: only the jump alone, under policy ACCEPT.
func TestGrantPassesNothing(t *testing.T) {
	c := DefaultConfig()
	jump := "-A PREROUTING -j " + c.Chain
	for _, tc := range []struct {
		name   string
		rules  []string
		policy string
		want   bool
	}{
		{"the jump alone", []string{jump}, "ACCEPT", true},
		{"policy drop", []string{jump}, "DROP", false},
		{"a rule after it", []string{jump, "-A PREROUTING -j CONNMARK --restore-mark"}, "ACCEPT", false},
		{"no jump", nil, "ACCEPT", false},
	} {
		s := State{Tables: []TableState{{Table: mangleTable, Hooks: map[string][]string{"PREROUTING": tc.rules}, Policies: map[string]string{"PREROUTING": tc.policy}}}}
		if got := s.grantPassesNothing(c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
