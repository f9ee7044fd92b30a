package config

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/gate"
)

func TestShippedConfigParses(t *testing.T) {
	c, err := LoadConfig("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy != gate.PolicyDrop || c.OpenDuration != 15*time.Second || c.KnockTolerance != 7*time.Second {
		t.Errorf("shipped defaults changed: %+v", c)
	}
	if c.Rules.GateQueue != 101 || c.Rules.KnockQueue != 100 || c.Rules.KnockFirst != 10000 || c.Rules.KnockLast != 60000 {
		t.Errorf("queues/ports: %+v", c.Rules)
	}
	if got := c.ProtectList(); got != "tcp/2000,tcp/3000,udp/8000" {
		t.Errorf("protect = %s", got)
	}
}

// withProtect adds gate.protect to a test config that lacks it (the key
// is required), so that the test meets the problem it is about.
func withProtect(config string) string {
	const protect = "  protect: [tcp/2000]\n"
	switch {
	case strings.Contains(config, "protect:"):
		return config
	case strings.Contains(config, "gate:\n"):
		return strings.Replace(config, "gate:\n", "gate:\n"+protect, 1)
	}
	return config + "gate:\n" + protect
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name string
		give string
		want string
	}{
		{"unknown section", "servre:\n  pkcs12: x\n", "servre: unknown section"},
		{"unknown key", "knock:\n  portz: 1\n", "knock.portz: unknown key"},
		{"bad duration", "gate:\n  open_duration: fifteen\n", "gate.open_duration: \"fifteen\" is not a duration"},
		{"zero duration", "gate:\n  open_duration: 0s\n", "gate.open_duration: 0s is out of range"},
		{"bad port spec", "gate:\n  protect: [tcp/70000]\n", "gate.protect"},
		{"protected and allowed", "gate:\n  protect: [tcp/22]\n  always_allow: [tcp/22]\n", "gate.protect: tcp/22: overlaps always-allowed tcp/22"},
		{"bad policy", "gate:\n  policy: maybe\n", "gate.policy: unknown policy \"maybe\""},
		{"same queues", "gate:\n  queue: 100\n", "gate.queue"},
		{"bad knock ports", "knock:\n  ports: \"60000:10000\"\n", "knock.ports"},
		{"bad min length", "knock:\n  min_length: -1\n", "knock.min_length"},
		{"bad protocols", "knock:\n  protocols: [3]\n", "knock.protocols"},
		{"empty protocols", "knock:\n  protocols: []\n", "knock.protocols"},
		{"bad mark", "gate:\n  reject_mark: 0\n", "gate.reject_mark"},
		{"bad level", "log:\n  level: loud\n", "log.level"},
		{"not a list", "gate:\n  protect: tcp/22\n", "gate.protect: must be a list"},
		{"both passwords", "server:\n  password_file: a\n  password_env: B\n", "server.password_env"},
		{"bad url", "crl:\n  file: /x\n  url: ftp://x\n", "crl.url"},
		{"url without file", "crl:\n  url: https://x/ca.crl\n", "crl.file: required"},
		{"not yaml", "gate: [\n", "not valid YAML"},
		{"duplicate key", "gate:\n  queue: 1\n  queue: 2\n", "gate.queue"},
		{"zero gate queues", "gate:\n  queues: 0\n", "gate.queues: 0 is out of range (1 to 16)"},
		{"too many gate queues", "gate:\n  queues: 17\n", "gate.queues: 17 is out of range (1 to 16)"},
		{"gate queues not a number", "gate:\n  queues: many\n", "gate.queues: \"many\" is not a whole number"},
		{"gate queues take in the knock queue", "gate:\n  queue: 99\n  queues: 2\n", "gate.queues: 2: gate queues 99-100 take in KnockQueue 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("test.yaml", []byte(withProtect(tt.give)))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.give)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func TestGateQueues(t *testing.T) {
	tests := []struct {
		name string
		give string
		want []uint16
	}{
		{"default", "", []uint16{101}},
		{"one", "gate:\n  queues: 1\n", []uint16{101}},
		{"four from 200", "gate:\n  queue: 200\n  queues: 4\n", []uint16{200, 201, 202, 203}},
		{"below the knock queue", "gate:\n  queue: 98\n  queues: 2\n", []uint16{98, 99}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("test.yaml", []byte(withProtect(tt.give)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, c.Rules.GateQueueNumbers()); diff != "" {
				t.Errorf("gate queues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestProtectAloneIsDefaults(t *testing.T) {
	c, err := ParseConfig("protect.yaml", []byte(withProtect("")))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerPKCS12 != "/etc/sknock/server.pfx" || c.Rules.Chain != "SKNOCK" {
		t.Errorf("defaults: %+v", c)
	}
}

func TestPasswordEnvAloneReplacesTheDefaultFile(t *testing.T) {
	c, err := ParseConfig("t.yaml", []byte(withProtect("server:\n  password_env: SKNOCK_PASSWORD\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerPasswordFile != "" || c.ServerPasswordEnv != "SKNOCK_PASSWORD" {
		t.Errorf("password_file %q, password_env %q; want the env alone", c.ServerPasswordFile, c.ServerPasswordEnv)
	}
}

// TestConfigErrorsNameLineAndKey: a mis-indented key of the shipped file
// is blamed on its own line, and a tolerance above 5 minutes is refused
// naming the key.
func TestConfigErrorsNameLineAndKey(t *testing.T) {
	shipped, err := os.ReadFile("../../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(shipped), "\n")
	policy := slices.Index(lines, "  policy: drop")
	tolerance := slices.Index(lines, "  timestamp_tolerance: 7s")
	if policy < 0 || tolerance < 0 {
		t.Fatal("config.yaml lacks gate.policy or knock.timestamp_tolerance")
	}
	edit := func(at int, line string) []byte {
		c := slices.Clone(lines)
		c[at] = line
		return []byte(strings.Join(c, "\n"))
	}
	tests := []struct {
		name string
		give []byte
		want string
	}{
		{name: "mis-indented key", give: edit(policy, "   policy: drop"), want: fmt.Sprintf("config.yaml:%d: not valid YAML: column 4: ", policy+1)},
		{name: "tolerance above 5m", give: edit(tolerance, "  timestamp_tolerance: 7m"), want: fmt.Sprintf("config.yaml:%d: knock.timestamp_tolerance: 7m0s is out of range (1s to 5m0s)", tolerance+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("config.yaml", tt.give)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("ParseConfig: %v, want %q...", err, tt.want)
			}
		})
	}
}
