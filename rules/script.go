package rules

import (
	"fmt"
	"slices"
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
		b.WriteString(indent(body.String()))
		b.WriteString("fi\n")
	}
	return b.String(), nil
}

// writeApply writes the commands of Apply for one family: per table, one
// iptables-restore transaction replaces the chains' contents whole (and
// puts the jumps first where they are not), then surplus jumps are
// deleted. As in Apply, a filter chain already there first holds its old
// rules and the new ones (the bridge) while the gate is replaced; else
// the filter chain goes in first. Listings are read without iptables'
// quotes and with the reject label by number, as Apply compares them.
func (c Config) writeApply(b *strings.Builder, ipt string, ipv6 bool) {
	parts := c.parts(ipv6)
	mangle, filter := parts[0], parts[1]
	var fb strings.Builder
	c.writeApplyPart(&fb, ipt, filter)
	restore := strings.Replace(ipt, "tables -w", "tables-restore -w 5 --noflush", 1)
	chain := shellQuote(c.Chain)
	fmt.Fprintf(b, "if %s -t %s -S %s >/dev/null 2>&1; then\n", ipt, filterTable, chain)
	fmt.Fprintf(b, "\t{\n\t\techo '*%s'\n\t\techo ':%s - [0:0]'\n", filterTable, c.Chain)
	fmt.Fprintf(b, "\t\t%s -t %s -S %s | grep '^-A '\n\t\tcat <<-EOF\n", ipt, filterTable, chain)
	for _, rule := range filter.chains[0].rules {
		fmt.Fprintf(b, "\t\t-A %s %s\n", c.Chain, strings.Join(rule, " "))
	}
	fmt.Fprintf(b, "\t\tCOMMIT\n\t\tEOF\n\t} | %s\nelse\n", restore)
	b.WriteString(indent(fb.String()))
	b.WriteString("fi\n")
	c.writeApplyPart(b, ipt, mangle)
	b.WriteString(fb.String())
	c.writeDropBackstop(b, ipt)
}

// writeDropBackstop writes the deletion of the backstop when c does not use
// the reject label (see dropBackstops): one left by an earlier rule set
// that did.
func (c Config) writeDropBackstop(b *strings.Builder, ipt string) {
	if !c.Labels() {
		fmt.Fprintf(b, "while %s -t %s -D POSTROUTING %s 2>/dev/null; do :; done\n", ipt, mangleTable, shellJoin(c.Backstop()))
	}
}

// listing is the shell pipeline that lists a built-in chain's rules as
// Apply compares them.
func listing(tipt, chain string) string {
	return fmt.Sprintf("%s -S %s | grep '^-A ' | tr -d '\"' | sed 's/--label %s /--label %d /'", tipt, chain, LabelName, DefaultRejectLabel)
}

// writeApplyPart writes the commands of applyPart.
func (c Config) writeApplyPart(b *strings.Builder, ipt string, p part) {
	restore := strings.Replace(ipt, "tables -w", "tables-restore -w 5 --noflush", 1)
	tipt := ipt + " -t " + p.table
	for i, h := range p.hooks {
		fmt.Fprintf(b, "if [ \"$(%s | head -n 1)\" = %s ]; then\n", listing(tipt, h.chain), shellQuote(h.rule()))
		fmt.Fprintf(b, "\tjump%d=\nelse\n\tjump%d=%s\nfi\n", i, i, shellQuote("-I "+h.chain+" 1 "+strings.Join(h.jump, " ")))
	}
	fmt.Fprintf(b, "%s <<-EOF\n", restore)
	for _, line := range strings.Split(strings.TrimSuffix(p.restoreInput(nil), "COMMIT\n"), "\n") {
		if line != "" {
			b.WriteString(line + "\n")
		}
	}
	for i := range p.hooks {
		fmt.Fprintf(b, "$jump%d\n", i)
	}
	b.WriteString("COMMIT\nEOF\n")
	for _, h := range p.hooks {
		fmt.Fprintf(b, "for n in $(%s | grep -nxF -- %s | cut -d: -f1 | sort -rn); do\n", listing(tipt, h.chain), shellQuote(h.rule()))
		fmt.Fprintf(b, "\t[ \"$n\" -eq 1 ] || %s -D %s \"$n\"\ndone\n", tipt, h.chain)
	}
}

// writeRemove writes the commands of Remove for one family.
func (c Config) writeRemove(b *strings.Builder, ipt string) {
	chain := shellQuote(c.Chain)
	for _, p := range c.parts(false) {
		tipt := ipt + " -t " + p.table
		for _, h := range p.hooks {
			if !slices.Contains(h.jump, c.Chain) { // the backstop outlives the chain
				fmt.Fprintf(b, "while %s -D %s %s 2>/dev/null; do :; done\n", tipt, h.chain, shellJoin(h.jump))
			}
		}
		fmt.Fprintf(b, "if %s -S %s >/dev/null 2>&1; then\n", tipt, chain)
		for _, h := range p.hooks {
			if slices.Contains(h.jump, c.Chain) {
				fmt.Fprintf(b, "\twhile %s -D %s %s 2>/dev/null; do :; done\n", tipt, h.chain, shellJoin(h.jump))
			}
		}
		b.WriteString("fi\n")
		for _, name := range p.names() {
			fmt.Fprintf(b, "! %s -S %s >/dev/null 2>&1 || %s -F %s\n", tipt, shellQuote(name), tipt, shellQuote(name))
		}
		for _, name := range p.names() {
			fmt.Fprintf(b, "! %s -S %s >/dev/null 2>&1 || %s -X %s\n", tipt, shellQuote(name), tipt, shellQuote(name))
		}
	}
	c.writeDropBackstop(b, ipt)
}

// indent puts a tab in front of every line of s.
func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString("\t" + line)
		}
	}
	return b.String()
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
