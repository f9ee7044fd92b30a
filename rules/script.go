package rules

import (
	"fmt"
	"strings"
)

// Script renders a POSIX shell script that does with the iptables and
// ip6tables commands what ApplyAll ("apply") or RemoveAll ("remove") does,
// for operators who set the rules up by hand (scripts/setup-rules.sh) or
// want to read them. Like Apply, "apply" is idempotent and keeps protected
// ports closed while it replaces a leftover chain; "remove" succeeds when
// there is nothing to remove. It stops at the first failing command.
func (c Config) Script(action string) (string, error) {
	var b strings.Builder
	switch action {
	case "apply":
		if err := c.Validate(); err != nil {
			return "", err
		}
	case "remove":
		if err := c.validateChain(); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("rules: script action %q: want apply or remove", action)
	}
	fmt.Fprintf(&b, "#!/bin/sh\n# sknock: %s the rules of chain %s for IPv4 and IPv6.\nset -eu\n", action, c.Chain)
	for _, ipv6 := range []bool{false, true} {
		ipt := family(ipv6) + " -w"
		fmt.Fprintf(&b, "\n# %s\n", family(ipv6))
		var body strings.Builder
		if action == "apply" {
			c.writeApply(&body, ipt, ipv6)
		} else {
			c.writeRemove(&body, ipt)
		}
		if !ipv6 {
			b.WriteString(body.String())
			continue
		}
		// A kernel without IPv6 (ipv6.disable=1) needs no IPv6 rules.
		fmt.Fprintf(&b, "if [ -e %s ]; then\n", inet6Path)
		for _, line := range strings.SplitAfter(body.String(), "\n") {
			if line != "" {
				b.WriteString("\t" + line)
			}
		}
		b.WriteString("fi\n")
	}
	return b.String(), nil
}

// writeApply writes the commands of Apply for one family: one
// iptables-restore transaction replaces the chain's contents whole (and
// puts the jump first in INPUT when it is not), then surplus jumps are
// deleted.
func (c Config) writeApply(b *strings.Builder, ipt string, ipv6 bool) {
	restore := strings.Replace(ipt, "tables -w", "tables-restore -w 5 --noflush", 1)
	jump := c.jumpRule()
	fmt.Fprintf(b, "if [ \"$(%s -S INPUT | grep '^-A ' | head -n 1)\" = %s ]; then\n", ipt, shellQuote(jump))
	fmt.Fprintf(b, "\tjump=\nelse\n\tjump=%s\nfi\n", shellQuote("-I INPUT 1 "+strings.Join(c.Jump(), " ")))
	fmt.Fprintf(b, "%s <<-EOF\n", restore)
	for _, line := range strings.Split(strings.TrimSuffix(c.restoreInput(ipv6, false), "COMMIT\n"), "\n") {
		if line != "" {
			b.WriteString(line + "\n")
		}
	}
	b.WriteString("$jump\nCOMMIT\nEOF\n")
	fmt.Fprintf(b, "for n in $(%s -S INPUT | grep '^-A ' | grep -nxF -- %s | cut -d: -f1 | sort -rn); do\n", ipt, shellQuote(jump))
	fmt.Fprintf(b, "\t[ \"$n\" -eq 1 ] || %s -D INPUT \"$n\"\ndone\n", ipt)
}

// writeRemove writes the commands of Remove for one family.
func (c Config) writeRemove(b *strings.Builder, ipt string) {
	chain := shellQuote(c.Chain)
	fmt.Fprintf(b, "if %s -S %s >/dev/null 2>&1; then\n", ipt, chain)
	fmt.Fprintf(b, "\twhile %s -D INPUT %s 2>/dev/null; do :; done\n", ipt, shellJoin(c.Jump()))
	fmt.Fprintf(b, "\t%s -F %s\n\t%s -X %s\nfi\n", ipt, chain, ipt, chain)
}

// shellJoin quotes each argument for sh and joins them with spaces.
func shellJoin(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	return strings.Join(quoted, " ")
}

// shellQuote returns s unchanged when it holds only characters sh never
// interprets, else single-quoted.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,=+@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
