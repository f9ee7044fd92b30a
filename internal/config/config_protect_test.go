package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestConfigProtectsSomething checks that a configuration whose protected
// set is empty or contradicts itself is refused naming the key and line:
// gate.protect is required (no default of demo ports) and may not be
// empty, a tcp/* or udp/* must leave a port, and a second YAML document
// is refused rather than ignored.
func TestConfigProtectsSomething(t *testing.T) {
	const (
		required = "gate.protect: required: list the ports to hide, e.g. [tcp/2000] (there is no default)"
		empty    = "gate.protect: empty: it would protect nothing; list the ports to hide, e.g. [tcp/2000]"
		second   = "a second YAML document (after ---); the file must hold exactly one"
	)
	tests := []struct {
		name string
		give string
		want string // the whole error; "" = accepted
	}{
		{name: "empty file", give: "", want: "p.yaml: " + required},
		{name: "comments only", give: "# nothing\n", want: "p.yaml: " + required},
		{name: "no gate section", give: "log:\n  level: info\n", want: "p.yaml: " + required},
		{name: "gate section without protect", give: "log:\n  level: info\ngate:\n  policy: drop\n", want: "p.yaml:3: " + required},
		{name: "null gate section", give: "gate:\n", want: "p.yaml:1: " + required},
		{name: "empty list", give: "gate:\n  policy: drop\n  protect: []\n", want: "p.yaml:3: " + empty},
		{name: "null list", give: "gate:\n  protect:\n  policy: drop\n", want: "p.yaml:2: " + empty},
		{
			name: "tcp all always allowed",
			give: "gate:\n  protect: [tcp/*]\n  always_allow: [tcp/*]\n",
			want: "p.yaml:2: gate.protect: tcp/*: protects nothing: every tcp port is always allowed (tcp/*)",
		},
		{
			name: "tcp all always allowed, block lists",
			give: "gate:\n  always_allow:\n    - tcp/1-1000\n    - tcp/1001-65535\n  protect:\n    - tcp/*\n",
			want: "p.yaml:5: gate.protect: tcp/*: protects nothing: every tcp port is always allowed (tcp/1-1000, tcp/1001-65535)",
		},
		{
			name: "udp all with knocks on every port",
			give: "knock:\n  ports: \"1:65535\"\ngate:\n  protect: [udp/*]\n  always_allow: []\n",
			want: "p.yaml:4: gate.protect: udp/*: protects nothing: every udp port is a knock port (udp/1-65535)",
		},
		{
			name: "udp all beside a real port",
			give: "knock:\n  ports: \"1:65535\"\ngate:\n  protect: [tcp/2000, udp/*]\n",
			want: "p.yaml:4: gate.protect: udp/*: protects nothing: every udp port is a knock port (udp/1-65535)",
		},
		{
			name: "second document",
			give: "gate:\n  protect: [tcp/2000]\n---\ngate:\n  protect: [tcp/3000]\n",
			want: "p.yaml:3: " + second,
		},
		{
			name: "second document that is empty",
			give: "gate:\n  protect: [tcp/2000]\n---\n",
			want: "p.yaml:3: " + second,
		},
		{
			name: "second document that is invalid",
			give: "gate:\n  protect: [tcp/2000]\n---\ngate: [\n",
			want: "p.yaml:4: not valid YAML: column 7: sequence end token ']' not found",
		},
		{name: "one document with a start marker", give: "---\ngate:\n  protect: [tcp/2000]\n"},
		{name: "one document with an end marker", give: "gate:\n  protect: [tcp/2000]\n...\n"},
		{name: "tcp all leaves a port", give: "gate:\n  protect: [tcp/*]\n  always_allow: [tcp/1-65534]\n"},
		{name: "udp all leaves a port", give: "knock:\n  ports: \"2:65535\"\ngate:\n  protect: [udp/*]\n"},
		{name: "tcp all with ssh always allowed", give: "gate:\n  protect: [tcp/*]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("p.yaml", []byte(tt.give))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseConfig error (-want +got):\n%s\nconfig:\n%s", diff, tt.give)
			}
		})
	}
}
