package rules_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/rules"
)

// mustSpecs parses port specs or fails the test.
func mustSpecs(t testing.TB, ss ...string) []rules.PortSpec {
	t.Helper()
	out := []rules.PortSpec{}
	for _, s := range ss {
		p, err := rules.ParsePortSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// TestValidateProtectsSomething checks that a tcp/* or udp/* whose every
// port is always allowed or a knock port, which hides nothing while
// claiming to hide everything, is refused naming the Protect field and
// the spec, and that what still leaves a port is accepted.
func TestValidateProtectsSomething(t *testing.T) {
	type give struct {
		protect, allow []string
		knock          [2]uint16 // zero: the default 10000-60000
	}
	tests := []struct {
		name string
		give give
		want *rules.ConfigError // nil: valid
	}{
		{
			name: "tcp all always allowed",
			give: give{protect: []string{"tcp/*"}, allow: []string{"tcp/*"}},
			want: &rules.ConfigError{Field: "Protect", Value: "tcp/*", Reason: "protects nothing: every tcp port is always allowed (tcp/*)"},
		},
		{
			name: "tcp all always allowed as a full range",
			give: give{protect: []string{"tcp/*"}, allow: []string{"tcp/1-65535"}},
			want: &rules.ConfigError{Field: "Protect", Value: "tcp/*", Reason: "protects nothing: every tcp port is always allowed (tcp/1-65535)"},
		},
		{
			name: "tcp all always allowed in pieces",
			give: give{protect: []string{"tcp/*"}, allow: []string{"tcp/1000-65535", "tcp/22", "tcp/1-21", "tcp/23-999"}},
			want: &rules.ConfigError{Field: "Protect", Value: "tcp/*", Reason: "protects nothing: every tcp port is always allowed (tcp/1000-65535, tcp/22, tcp/1-21, tcp/23-999)"},
		},
		{
			name: "udp all with knocks on every port",
			give: give{protect: []string{"udp/*"}, knock: [2]uint16{1, 65535}},
			want: &rules.ConfigError{Field: "Protect", Value: "udp/*", Reason: "protects nothing: every udp port is a knock port (udp/1-65535)"},
		},
		{
			name: "udp all with knocks and always allowed covering the rest",
			give: give{protect: []string{"udp/*"}, allow: []string{"udp/1-99", "tcp/22"}, knock: [2]uint16{100, 65535}},
			want: &rules.ConfigError{Field: "Protect", Value: "udp/*", Reason: "protects nothing: every udp port is a knock port (udp/100-65535) or always allowed (udp/1-99)"},
		},
		{
			name: "empty udp all next to a real port",
			give: give{protect: []string{"tcp/2000", "udp/*"}, knock: [2]uint16{1, 65535}},
			want: &rules.ConfigError{Field: "Protect", Value: "udp/*", Reason: "protects nothing: every udp port is a knock port (udp/1-65535)"},
		},
		{name: "tcp all leaves one port", give: give{protect: []string{"tcp/*"}, allow: []string{"tcp/1-65534"}}},
		{name: "tcp all leaves a gap", give: give{protect: []string{"tcp/*"}, allow: []string{"tcp/1-99", "tcp/101-65535"}}},
		{name: "udp all leaves port 1", give: give{protect: []string{"udp/*"}, knock: [2]uint16{2, 65535}}},
		{name: "udp all with tcp all always allowed", give: give{protect: []string{"udp/*"}, allow: []string{"tcp/*"}}},
		{name: "tcp all with knocks on every udp port", give: give{protect: []string{"tcp/*"}, knock: [2]uint16{1, 65535}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.DefaultConfig()
			c.Protect = mustSpecs(t, tt.give.protect...)
			c.AlwaysAllow = mustSpecs(t, tt.give.allow...)
			if tt.give.knock != [2]uint16{} {
				c.KnockFirst, c.KnockLast = tt.give.knock[0], tt.give.knock[1]
			}
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var got *rules.ConfigError
			if !errors.As(err, &got) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
			if !strings.HasPrefix(err.Error(), "rules: Protect "+tt.want.Value+": ") {
				t.Errorf("error %q does not name the field and spec", err)
			}
		})
	}
}
