package config

import (
	"errors"
	"os"
	"reflect"
	"testing"
	"time"
)

// configFuzzSeeds are variants of the shipped config.yaml: minimal, with
// every kind of value, and the contradictions ParseConfig must refuse.
var configFuzzSeeds = []string{
	"",
	"server:\n  pkcs12: s.pfx\ngate:\n  protect: [tcp/2000]\n",
	"server:\n  pkcs12: s.pfx\n  password_env: PW\ncrl:\n  file: c.crl\n  url: https://ca.example/c.crl\n  refresh: 1h\n" +
		"knock:\n  ports: \"20000:20010\"\n  min_length: 0\n  timestamp_tolerance: 5m\n  queue: 7\n  workers: 4\n  backlog: 65536\n  rate_limit: \"\"\n" +
		"gate:\n  queue: 8\n  queues: 16\n  protect: [tcp/1-1000, udp/*]\n  always_allow: [tcp/22]\n  open_duration: 24h\n" +
		"  policy: reject\n  chain: X\n  reject_mark: 0x80000000\n  max_grants: 67108864\n  hold_queue: 65535\nlog:\n  level: debug\n",
	"server:\n  pkcs12: s.pfx\ngate:\n  protect: [tcp/*]\n  always_allow: [tcp/*]\n",
	"server:\n  pkcs12: s.pfx\nknock:\n  ports: 1:65535\ngate:\n  protect: [udp/*]\n",
	"server:\n  pkcs12: s.pfx\ngate:\n  protect: [tcp/2000]\n---\ngate:\n  protect: []\n",
	"server:\n  pkcs12: s.pfx\ngate:\n  protect: [tcp/2000]\n  open_duration: 9999999999h\n  queue: 65536\n",
	"server: [a, b]\ngate: {protect: [tcp/0, tcp/65536, sctp/1]}\n",
	"gate: &a\n  protect: *a\n",
}

// FuzzParseConfig: ParseConfig never panics; a refusal is a *ConfigError
// with a message; an accepted configuration has a valid rule set, values
// in their documented ranges, and parsing the same bytes again gives the
// same configuration.
func FuzzParseConfig(f *testing.F) {
	shipped, err := os.ReadFile("../../config.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(shipped)
	for _, seed := range configFuzzSeeds {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
		again, errAgain := ParseConfig("fuzz.yaml", data)
		if (err == nil) != (errAgain == nil) || (err != nil && err.Error() != errAgain.Error()) {
			t.Fatalf("parsed twice: %v, then %v", err, errAgain)
		}
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Msg == "" {
				t.Fatalf("refusal %v (%T) is not a *ConfigError with a message", err, err)
			}
			return
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("parsed twice, got two configurations:\n%+v\n%+v", c, again)
		}
		if err := c.Rules.Validate(); err != nil {
			t.Fatalf("accepted a rule set that does not validate: %v", err)
		}
		switch {
		case c.ServerPKCS12 == "":
			t.Fatal("accepted without server.pkcs12")
		case len(c.Rules.Protect) == 0:
			t.Fatal("accepted without gate.protect")
		case c.KnockTolerance < time.Second || c.KnockTolerance > 10*time.Minute:
			t.Fatalf("knock.timestamp_tolerance %s out of range", c.KnockTolerance)
		case c.OpenDuration < time.Second || c.OpenDuration > 24*time.Hour:
			t.Fatalf("gate.open_duration %s out of range", c.OpenDuration)
		case c.ServerPasswordFile != "" && c.ServerPasswordEnv != "":
			t.Fatal("accepted both server.password_file and server.password_env")
		case c.CRLURL != "" && c.CRLFile == "":
			t.Fatal("accepted crl.url without crl.file")
		case c.HoldQueue == c.Rules.KnockQueue:
			t.Fatalf("hold queue %d is the knock queue", c.HoldQueue)
		}
	})
}
