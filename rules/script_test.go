package rules_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/rules"
)

// TestScriptApply checks that the apply script holds both tables' rules,
// all jumps and the backstop for each family, in Apply's order; and that
// sh can parse it.
func TestScriptApply(t *testing.T) {
	c := designConfig(t)
	c.Protect = append(c.Protect, specs(t, "udp/*")...)
	script, err := c.Script("apply")
	if err != nil {
		t.Fatal(err)
	}
	// The script's lines without their indentation (heredocs are <<-).
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		lines = append(lines, strings.TrimLeft(l, "\t"))
	}
	for _, ipv6 := range []bool{false, true} {
		fam := "iptables"
		if ipv6 {
			fam = "ip6tables"
		}
		want := []string{
			fam + "-restore -w 5 --noflush <<-EOF",
			"jump0='-I PREROUTING 1 -j SKNOCK'",
			"jump1='-I POSTROUTING 1 " + strings.Join(c.Backstop(), " ") + "'",
			"jump0='-I INPUT 1 -j SKNOCK'",
			"jump1='-I FORWARD 1 -m conntrack --ctstate DNAT -j SKNOCK'",
			"*mangle", "*filter", ":SKNOCK - [0:0]", "$jump0", "$jump1",
		}
		for _, r := range append(c.Rules(ipv6), c.RejectRules(ipv6)...) {
			want = append(want, "-A SKNOCK "+strings.Join(r, " "))
		}
		for _, r := range c.SynRules() {
			want = append(want, "-A SKNOCK-SYN "+strings.Join(r, " "))
		}
		for _, w := range want {
			if !slices.Contains(lines, w) {
				t.Errorf("script lacks the line %q:\n%s", w, script)
			}
		}

		// The order of the transactions: the bridge when the filter
		// chain is there, else the filter chain; then the gate; then the
		// filter chain.
		raw := strings.Split(script, "\n")
		test := slices.Index(lines, "if "+fam+" -w -t filter -S SKNOCK >/dev/null 2>&1; then")
		if test < 0 {
			t.Fatalf("%s: no test for the filter chain:\n%s", fam, script)
		}
		indent := raw[test][:len(raw[test])-len(lines[test])]
		var tables []string
		closed := false // the test's fi has come
		for _, l := range raw[test+1:] {
			closed = closed || l == indent+"fi"
			switch t := strings.TrimLeft(l, "\t"); {
			case l == indent+"else" && !closed:
				tables = append(tables, "else")
			case t == "*mangle" || t == "*filter" || t == "echo '*filter'":
				tables = append(tables, t)
			}
			if len(tables) == 5 {
				break
			}
		}
		if diff := cmp.Diff([]string{"echo '*filter'", "else", "*filter", "*mangle", "*filter"}, tables); diff != "" {
			t.Errorf("%s: transactions (bridge / filter chain missing, then gate, then filter chain) (-want +got):\n%s", fam, diff)
		}
	}
	if sh, err := exec.LookPath("sh"); err == nil {
		if out, err := exec.Command(sh, "-n", "-c", script).CombinedOutput(); err != nil {
			t.Errorf("sh -n: %v: %s", err, out)
		}
	}
}

func TestScriptErrors(t *testing.T) {
	c := rules.DefaultConfig()
	if _, err := c.Script("restart"); err == nil || !strings.Contains(err.Error(), `"restart"`) {
		t.Errorf("Script(restart) = %v, want an error naming the action", err)
	}
	c.Mark = 0
	if _, err := c.Script("apply"); err == nil {
		t.Error("Script(apply) with an invalid config succeeded")
	}
	if _, err := c.Script("remove"); err != nil {
		t.Errorf("Script(remove) needs only the chain name, got %v", err)
	}
}
