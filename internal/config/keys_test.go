package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/control"
)

// TestConfigValuesCoverEveryKey checks the key table itself: every key
// is named once, in a section, and can be read, compared and documented.
func TestConfigValuesCoverEveryKey(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Keys() {
		switch {
		case seen[k.Name]:
			t.Errorf("key %s is in the table twice", k.Name)
		case !strings.Contains(k.Name, ".") || k.Section() == "":
			t.Errorf("key %s names no section", k.Name)
		case k.set == nil || k.get == nil:
			t.Errorf("key %s cannot be read or compared", k.Name)
		case k.Doc == "" || k.Default == "":
			t.Errorf("key %s has no doc or default for the README", k.Name)
		}
		seen[k.Name] = true
	}
}

func TestChangedKeys(t *testing.T) {
	a := Default()
	b := Default()
	b.Rules.Protect = append(b.Rules.Protect, b.Rules.AlwaysAllow[0])
	b.KnockTolerance++
	b.Rules.KnockLast--
	if diff := cmp.Diff([]string{"gate.protect", "knock.ports", "knock.timestamp_tolerance"}, Changed(&a, &b)); diff != "" {
		t.Errorf("Changed (-want +got):\n%s", diff)
	}
	if got := Changed(&a, &a); len(got) != 0 {
		t.Errorf("Changed of equal configs = %q", got)
	}
}

func TestMetricsConfig(t *testing.T) {
	base := "server:\n  pkcs12: /x.pfx\ngate:\n  protect: [tcp/2000]\n"
	tests := []struct {
		name    string
		give    string
		wantErr string
	}{
		{"metrics off by default", "", ""},
		{"metrics loopback", "metrics:\n  listen: 127.0.0.1:9466\n", ""},
		{"metrics no port", "metrics:\n  listen: 127.0.0.1\n", "metrics.listen"},
		{"metrics bad port", "metrics:\n  listen: \"[::1]:http\"\n", "metrics.listen"},
		{"control relative", "control:\n  socket: run/x.sock\n", "control.socket"},
		{"control off", "control:\n  socket: \"\"\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("c.yaml", []byte(base+tt.give))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one naming %s (config %+v)", err, tt.wantErr, c.MetricsListen)
			}
		})
	}
	if c, _ := ParseConfig("c.yaml", []byte(base)); c.MetricsListen != "" || c.ControlSocket != control.DefaultSocket {
		t.Errorf("defaults: metrics.listen %q, control.socket %q; want off and %s", c.MetricsListen, c.ControlSocket, control.DefaultSocket)
	}
	if byName("metrics.listen").Reload != Restart || byName("control.socket").Reload != Restart {
		t.Error("metrics.listen and control.socket must take a restart")
	}
}
