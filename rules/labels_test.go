package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/rules"
	"sknock/rules/rulestest"
)

// labelled reports whether any rule of tab, in mangle or filter, names a
// conntrack label.
func labelled(t *testing.T, tab *rulestest.Table) bool {
	t.Helper()
	for _, table := range []string{"mangle", "filter"} {
		text, err := tab.Save(table)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text, "connlabel") {
			return true
		}
	}
	return false
}

// TestLabelsOnlyWhereUsed: the rule set names the reject label exactly
// when something uses it: a closed-port answer, a protected UDP port, or
// a host that forwards.
func TestLabelsOnlyWhereUsed(t *testing.T) {
	tcp := rules.DefaultConfig()
	tcp.Protect = specs(t, "tcp/2000", "tcp/3000")
	withUDP := tcp
	withUDP.Protect = specs(t, "tcp/2000", "udp/8000")
	rejecting := tcp
	rejecting.RejectKnocks = true
	stray := tcp
	stray.RejectStray = true
	forwarding := tcp
	forwarding.Forwarding = true
	for _, tc := range []struct {
		name string
		c    rules.Config
		want bool
	}{
		{"drop, TCP only, no forwarding", tcp, false},
		{"a protected UDP port", withUDP, true},
		{"knocks answered as a closed port", rejecting, true},
		{"reject policy", stray, true},
		{"a host that forwards", forwarding, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.c.Labels(); got != tc.want {
				t.Fatalf("Labels() = %v, want %v", got, tc.want)
			}
			tab := rulestest.New()
			if err := rules.Apply(tab, tc.c, false); err != nil {
				t.Fatal(err)
			}
			if got := labelled(t, tab); got != tc.want {
				t.Errorf("a rule names a label: %v, want %v", got, tc.want)
			}
			backstop := strings.Join(tc.c.Backstop(), " ")
			var found bool
			for _, r := range tab.TableRules("mangle", "POSTROUTING") {
				found = found || strings.Contains(r, backstop)
			}
			if found != tc.want {
				t.Errorf("backstop in mangle POSTROUTING: %v, want %v", found, tc.want)
			}
			if !tc.want {
				// A refusal that reaches the reject chain anyway is dropped.
				rej := tab.TableRules("mangle", tc.c.RejectChain())
				if len(rej) == 0 || !strings.HasSuffix(rej[len(rej)-1], "-j DROP") {
					t.Errorf("reject chain %q does not end in a drop", rej)
				}
			}
			if err := rules.Remove(tab, tc.c, false); err != nil {
				t.Fatal(err)
			}
			if rest := tab.TableRules("mangle", "POSTROUTING"); len(rest) != 0 {
				t.Errorf("left in mangle POSTROUTING after Remove: %q", rest)
			}
		})
	}
}

// TestKeeperRefitFollowsForwarding: the keeper reads the host's forwarding
// at Apply, and Refit applies the rule set again when it changes, adding
// the reject label's rules (and the backstop) when the host starts
// forwarding and taking them away when it stops; Repair then finds
// nothing to restore.
func TestKeeperRefitFollowsForwarding(t *testing.T) {
	c := rules.DefaultConfig()
	c.Protect = specs(t, "tcp/2000")
	v4, v6 := rulestest.New(), rulestest.New()
	k := rules.NewKeeper(v4, v6)
	forwards := false
	k.SetForwarding(func() bool { return forwards })
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	check := func(step string, want bool) {
		t.Helper()
		for _, tab := range []*rulestest.Table{v4, v6} {
			if got := labelled(t, tab); got != want {
				t.Errorf("%s: a rule names a label: %v, want %v", step, got, want)
			}
		}
		if f := k.Repair(); len(f) != 0 {
			t.Errorf("%s: Repair found %+v", step, f)
		}
	}
	check("applied without forwarding", false)
	if changed, labels, err := k.Refit(); changed || labels || err != nil {
		t.Errorf("Refit with nothing changed: %v, %v, %v", changed, labels, err)
	}

	forwards = true
	if changed, labels, err := k.Refit(); !changed || !labels || err != nil {
		t.Fatalf("Refit once forwarding: %v, %v, %v; want true, true, nil", changed, labels, err)
	}
	check("forwarding", true)

	forwards = false
	if changed, labels, err := k.Refit(); !changed || labels || err != nil {
		t.Fatalf("Refit once not forwarding: %v, %v, %v; want true, false, nil", changed, labels, err)
	}
	check("forwarding again off", false)

	// Where the label is in use anyway, forwarding changes no rule.
	c.RejectKnocks = true
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	forwards = true
	if changed, labels, err := k.Refit(); changed || !labels || err != nil {
		t.Errorf("Refit with labels in use anyway: %v, %v, %v; want false, true, nil", changed, labels, err)
	}
	check("reject answers", true)
}

// writeConf writes value to root/fam/conf/iface/setting.
func writeConf(t *testing.T, root, fam, iface, setting, value string) {
	t.Helper()
	dir := filepath.Join(root, fam, "conf", iface)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, setting), []byte(value+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestForwardsUnder(t *testing.T) {
	quiet := func(t *testing.T) string {
		root := t.TempDir()
		for _, fam := range []string{"ipv4", "ipv6"} {
			for _, iface := range []string{"all", "default", "lo", "eth0"} {
				writeConf(t, root, fam, iface, "forwarding", "0")
			}
		}
		return root
	}
	for _, tc := range []struct {
		name string
		set  func(t *testing.T, root string)
		want bool
	}{
		{"nothing forwards", func(*testing.T, string) {}, false},
		{"ipv4 all", func(t *testing.T, r string) { writeConf(t, r, "ipv4", "all", "forwarding", "1") }, true},
		{"ipv4 one interface", func(t *testing.T, r string) { writeConf(t, r, "ipv4", "eth0", "forwarding", "1") }, true},
		{"ipv6 all", func(t *testing.T, r string) { writeConf(t, r, "ipv6", "all", "forwarding", "1") }, true},
		{"ipv6 force_forwarding", func(t *testing.T, r string) { writeConf(t, r, "ipv6", "eth0", "force_forwarding", "1") }, true},
		{"only default (no interface yet)", func(t *testing.T, r string) { writeConf(t, r, "ipv4", "default", "forwarding", "1") }, false},
		{"no IPv6 in the kernel", func(t *testing.T, r string) { os.RemoveAll(filepath.Join(r, "ipv6")) }, false},
		{"IPv4 settings unreadable", func(t *testing.T, r string) { os.RemoveAll(filepath.Join(r, "ipv4")) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := quiet(t)
			tc.set(t, root)
			if got := rules.ForwardsUnder(root); got != tc.want {
				t.Errorf("forwards = %v, want %v", got, tc.want)
			}
		})
	}
}
