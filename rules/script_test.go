package rules_test

import (
	"os/exec"
	"strings"
	"testing"

	"sknock/rules"
)

func TestScriptApply(t *testing.T) {
	c := designConfig(t)
	c.Protect = append(c.Protect, specs(t, "udp/*")...)
	script, err := c.Script("apply")
	if err != nil {
		t.Fatal(err)
	}
	for _, ipv6 := range []bool{false, true} {
		restore := "iptables-restore -w 5 --noflush <<-EOF"
		if ipv6 {
			restore = "\tip6tables-restore -w 5 --noflush <<-EOF"
		}
		want := []string{restore, "jump='-I INPUT 1 -j SKNOCK'", ":SKNOCK - [0:0]"}
		for _, r := range c.Rules(ipv6) {
			want = append(want, "-A SKNOCK "+strings.Join(r, " "))
		}
		for _, w := range want {
			if !strings.Contains(script, w+"\n") {
				t.Errorf("script lacks the line %q:\n%s", w, script)
			}
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
