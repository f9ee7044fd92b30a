package rules

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// IPTables is the part of *iptables.IPTables (github.com/coreos/go-iptables)
// that Apply and Remove use, plus Restore, which go-iptables lacks;
// rulestest.Table is the in-memory fake.
type IPTables interface {
	ChainExists(table, chain string) (bool, error)
	ClearChain(table, chain string) error
	DeleteChain(table, chain string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	List(table, chain string) ([]string, error)
	ListById(table, chain string, id int) (string, error)
	// Restore feeds input to iptables-restore --noflush: every change in
	// it takes effect at once or not at all, and a chain it declares is
	// flushed (or created) first.
	Restore(input string) error
	// Save returns a table as "iptables-save -t TABLE" prints it: every
	// chain and rule in one read.
	Save(table string) (string, error)
}

const (
	filterTable = "filter"
	mangleTable = "mangle"
	inputChain  = "INPUT"
	// maxJumps bounds the loops that delete jumps, in case a Delete
	// reports success without removing anything.
	maxJumps = 1000
)

// family names the command of an address family in errors.
func family(ipv6 bool) string {
	if ipv6 {
		return "ip6tables"
	}
	return "iptables"
}

// hook is a built-in chain whose first rule must be a jump to the chain
// (or, for the backstop, a rule of its own).
type hook struct {
	chain string   // "PREROUTING", "POSTROUTING", "INPUT", "FORWARD"
	jump  []string // the jump's rule spec
}

// rule is the jump as "iptables -S CHAIN" lists it.
func (h hook) rule() string { return "-A " + h.chain + " " + strings.Join(h.jump, " ") }

// chainRules is one chain of the rule set and its rules.
type chainRules struct {
	name  string
	rules [][]string
}

// part is the rule set's share of one table: its chains (the main one,
// named Config.Chain, first), and the built-in chains that jump to it
// first.
type part struct {
	table  string
	chains []chainRules
	hooks  []hook
}

// names returns the names of p's chains, the main one first.
func (p part) names() []string {
	out := make([]string, len(p.chains))
	for i, ch := range p.chains {
		out[i] = ch.name
	}
	return out
}

// parts returns the rule set, table by table: the gate in mangle, then the
// refusal in filter. Mangle POSTROUTING's backstop is there with Labels.
func (c Config) parts(ipv6 bool) []part {
	hooks := []hook{{"PREROUTING", c.Jump()}}
	if c.Labels() {
		hooks = append(hooks, c.backstop())
	}
	return []part{
		{table: mangleTable, chains: []chainRules{
			{c.Chain, c.Rules(ipv6)},
			{c.SynChain(), c.SynRules()},
			{c.GrantChain(), c.GrantRules()},
			{c.RejectChain(), c.RejectMarkRules()},
		}, hooks: hooks},
		{table: filterTable, chains: []chainRules{{c.Chain, c.RejectRules(ipv6)}}, hooks: []hook{{inputChain, c.Jump()}, {"FORWARD", c.ForwardJump()}}},
	}
}

// backstop is mangle POSTROUTING's backstop as a hook: a rule of its own,
// first in the chain.
func (c Config) backstop() hook { return hook{"POSTROUTING", c.Backstop()} }

// Apply installs c's rules for one address family: the gate chains in
// mangle, which PREROUTING jumps to first, and the refusal chain in
// filter, which INPUT and FORWARD jump to first, each jump exactly once.
// Each table's chains (and the jumps that are not first) go in with one
// iptables-restore transaction, so no packet ever meets a half-built or
// missing chain: chains left by a crash or by an earlier configuration
// are replaced whole. Surplus jumps further down are deleted after.
//
// The filter chain goes in first, so that every refusal the new gate
// labels finds its rule. When a filter chain was there already (an
// earlier layout, which may have carried refusals by a packet mark, or
// gated in filter), it first holds its old rules followed by the new
// ones, until the new gate is in: no moment is without either. So a
// change to the reject label's use (Labels) has no moment either where the
// gate labels a refusal that no filter rule answers. Without Labels the
// backstop of an earlier rule set goes last.
//
// On error the table that failed is unchanged (the one before it may hold
// the new rules already); the error names the family, table and step.
func Apply(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	fam := family(ipv6)
	parts := c.parts(ipv6)
	mangle, filter := parts[0], parts[1]
	haveFilter, err := ipt.ChainExists(filterTable, c.Chain)
	if err != nil {
		return fmt.Errorf("%s: check chain %s: %w", fam, c.Chain, err)
	}
	var old []string
	if haveFilter {
		if old, err = ipt.List(filterTable, c.Chain); err != nil {
			return fmt.Errorf("%s: list chain %s in filter: %w", fam, c.Chain, err)
		}
	}
	order := []part{filter, mangle}
	if bridge := bridgeOf(filter, ruleLines(old), c.Chain); bridge != nil {
		order = []part{*bridge, mangle, filter}
	}
	for _, p := range order {
		if err := applyPart(ipt, p); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	if err := dropBackstops(ipt, c); err != nil {
		return fmt.Errorf("%s: %w", fam, err)
	}
	return nil
}

// bridgeOf returns the filter part to hold while the gate is replaced:
// the chain's old rules (old, "-A CHAIN ..." lines) and then the new
// ones; nil when there are no old rules or they are the new ones.
func bridgeOf(filter part, old []string, chain string) *part {
	main := filter.chains[0]
	var rules [][]string
	for _, l := range old {
		rules = append(rules, strings.Fields(strings.TrimPrefix(l, "-A "+chain+" ")))
	}
	if len(rules) == 0 {
		return nil
	}
	rules = append(rules, main.rules...)
	bridge := filter
	bridge.chains = []chainRules{{main.name, rules}}
	return &bridge
}

// applyPart replaces one table's chains and puts its jumps first.
func applyPart(ipt IPTables, p part) error {
	var insert []hook
	for _, h := range p.hooks {
		positions, err := jumpPositions(ipt, p.table, h)
		if err != nil {
			return fmt.Errorf("list %s %s: %w", p.table, h.chain, err)
		}
		if len(positions) == 0 || positions[0] != 1 {
			insert = append(insert, h)
		}
	}
	chain := p.chains[0].name
	if err := ipt.Restore(p.restoreInput(insert)); err != nil {
		return fmt.Errorf("replace chain %s in %s (that table was not changed): %w", chain, p.table, err)
	}
	for _, h := range p.hooks {
		if err := dropSurplusJumps(ipt, p.table, h); err != nil {
			return fmt.Errorf("jump from %s %s to %s: %w", p.table, h.chain, chain, err)
		}
	}
	return nil
}

// restoreInput is the iptables-restore transaction of one part: declare
// (and so flush) the chains, fill them, and put the jumps of insert first
// in their built-in chains.
func (p part) restoreInput(insert []hook) string {
	var b strings.Builder
	b.WriteString("*" + p.table + "\n")
	for _, ch := range p.chains {
		b.WriteString(":" + ch.name + " - [0:0]\n")
	}
	for _, ch := range p.chains {
		for _, rule := range ch.rules {
			b.WriteString("-A " + ch.name + " " + strings.Join(rule, " ") + "\n")
		}
	}
	for _, h := range insert {
		b.WriteString("-I " + h.chain + " 1 " + strings.Join(h.jump, " ") + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ruleLines returns the "-A ..." lines of a listing, without the chain's
// declaration or policy line.
func ruleLines(lines []string) []string {
	var out []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "-A ") {
			out = append(out, l)
		}
	}
	return out
}

// jumpPositions returns the 1-based positions in h's chain of rules that
// are exactly its jump.
func jumpPositions(ipt IPTables, table string, h hook) ([]int, error) {
	lines, err := ipt.List(table, h.chain)
	if err != nil {
		return nil, err
	}
	return positionsOf(ruleLines(lines), h.rule()), nil
}

// positionsOf returns the 1-based positions of rule in rules.
// iptables quotes a connlabel's number ("127"), which the rule spec does
// not.
func positionsOf(rules []string, rule string) []int {
	var positions []int
	for i, l := range rules {
		if unquote(l) == rule {
			positions = append(positions, i+1)
		}
	}
	return positions
}

// dropSurplusJumps deletes every jump of h but the first, which must be
// at position 1. Surplus jumps are deleted by position, last first, each
// checked just before deletion so that a rule another tool inserted in
// the meantime is never deleted.
func dropSurplusJumps(ipt IPTables, table string, h hook) error {
	positions, err := jumpPositions(ipt, table, h)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if len(positions) == 0 || positions[0] != 1 {
		return fmt.Errorf("not the first rule of %s right after it was put there (another tool is changing %s)", h.chain, h.chain)
	}
	for _, pos := range slices.Backward(positions[1:]) {
		got, err := ipt.ListById(table, h.chain, pos)
		if err != nil {
			return fmt.Errorf("check surplus jump at %d: %w", pos, err)
		}
		if unquote(strings.TrimSpace(got)) != h.rule() {
			return fmt.Errorf("surplus jump at %d changed under us to %q; not deleting it", pos, got)
		}
		if err := ipt.DeleteById(table, h.chain, pos); err != nil {
			return fmt.Errorf("delete surplus jump at %d: %w", pos, err)
		}
	}
	return nil
}

// unquote drops the double quotes iptables puts around a connlabel, and
// spells the label by number where connlabel.conf gave it sknock's name.
func unquote(l string) string {
	l = strings.ReplaceAll(l, `"`, "")
	return strings.ReplaceAll(l, "--label "+LabelName+" ", "--label "+strconv.Itoa(DefaultRejectLabel)+" ")
}

// LabelName is the name connlabel.conf (see LabelConf) gives
// DefaultRejectLabel; iptables lists the label by it when the file does.
const LabelName = "sknock-reject"

// LabelConf is the line of /etc/xtables/connlabel.conf that names sknock's
// reject label. Without the file iptables warns on every listing of a rule
// with a connlabel; a file without any label makes it fail. The setup
// script and the package install it.
const LabelConf = "127 sknock-reject"

// withUndo joins the error of a failed rollback to the error that caused it.
func withUndo(err, undoErr error) error {
	if undoErr == nil {
		return err
	}
	return errors.Join(err, fmt.Errorf("roll back: %w", undoErr))
}

// Remove deletes every jump to the chain, then flushes and deletes the
// chains, in mangle (the gate) first, then in filter. Removing what is not
// there is not an error. This is what uncovers the protected ports: only
// an explicit command calls it.
func Remove(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.validateChain(); err != nil {
		return err
	}
	fam := family(ipv6)
	for _, p := range c.parts(ipv6) {
		if err := removePart(ipt, p); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	if err := dropBackstops(ipt, c); err != nil {
		return fmt.Errorf("%s: %w", fam, err)
	}
	return nil
}

// removePart removes one table's chains and their jumps.
func removePart(ipt IPTables, p part) error {
	chain := p.chains[0].name
	// No chain, no jump (iptables refuses to delete a chain still jumped
	// to), but the backstop, which names no chain, may outlive it.
	exists, err := ipt.ChainExists(p.table, chain)
	if err != nil {
		return fmt.Errorf("check chain %s in %s: %w", chain, p.table, err)
	}
	for _, h := range p.hooks {
		if !exists && slices.Contains(h.jump, chain) {
			continue // a jump to a missing chain cannot be there
		}
		for range maxJumps {
			ok, err := ipt.Exists(p.table, h.chain, h.jump...)
			if err != nil {
				return fmt.Errorf("check jump from %s %s to %s: %w", p.table, h.chain, chain, err)
			}
			if !ok {
				break
			}
			if err := ipt.Delete(p.table, h.chain, h.jump...); err != nil {
				return fmt.Errorf("delete jump from %s %s to %s: %w", p.table, h.chain, chain, err)
			}
		}
	}
	// The main chain jumps to the helpers: flush every chain, then delete.
	var present []string
	for _, name := range p.names() {
		ok, err := ipt.ChainExists(p.table, name)
		if err != nil {
			return fmt.Errorf("check chain %s in %s: %w", name, p.table, err)
		}
		if ok {
			present = append(present, name)
			if err := ipt.ClearChain(p.table, name); err != nil {
				return fmt.Errorf("flush chain %s in %s: %w", name, p.table, err)
			}
		}
	}
	for _, name := range present {
		if err := ipt.DeleteChain(p.table, name); err != nil {
			return fmt.Errorf("delete chain %s in %s (is it still referenced?): %w", name, p.table, err)
		}
	}
	return nil
}

// legacyBackstop starts and ends the mangle POSTROUTING backstop of the
// layout before conntrack labels, which dropped DNAT-ed packets by a
// packet mark that other tools may set too.
const (
	legacyBackstopStart = "-A POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark "
	legacyBackstopEnd   = " -j DROP"
)

// dropBackstops deletes from mangle POSTROUTING the backstops that c has
// no use for: those of the mark layout, and c's own when c does not use
// the reject label (Labels); last first, each checked just before
// deletion.
func dropBackstops(ipt IPTables, c Config) error {
	lines, err := ipt.List(mangleTable, "POSTROUTING")
	if err != nil {
		return fmt.Errorf("list mangle POSTROUTING: %w", err)
	}
	rules := ruleLines(lines)
	own := c.backstop().rule()
	for i := len(rules) - 1; i >= 0; i-- {
		legacy := strings.HasPrefix(rules[i], legacyBackstopStart) && strings.HasSuffix(rules[i], legacyBackstopEnd)
		if !legacy && (c.Labels() || unquote(rules[i]) != own) {
			continue
		}
		got, err := ipt.ListById(mangleTable, "POSTROUTING", i+1)
		if err != nil || strings.TrimSpace(got) != rules[i] {
			return fmt.Errorf("mangle POSTROUTING changed while deleting the old backstop at %d", i+1)
		}
		if err := ipt.DeleteById(mangleTable, "POSTROUTING", i+1); err != nil {
			return fmt.Errorf("delete the old backstop at mangle POSTROUTING %d: %w", i+1, err)
		}
	}
	return nil
}

// inet6Path exists when the kernel has IPv6; booted with ipv6.disable=1 it
// does not, and no IPv6 packet can reach the host.
const inet6Path = "/proc/net/if_inet6"

// IPv6Enabled reports whether the running kernel has IPv6, and so whether
// the rules need ip6tables too.
func IPv6Enabled() bool {
	_, err := os.Stat(inet6Path)
	return err == nil
}

// ApplyAll applies c with the system's iptables and ip6tables (iptables
// alone when the kernel has no IPv6), as Keeper.Apply does.
func ApplyAll(c Config) error {
	k, err := SystemKeeper()
	if err != nil {
		return err
	}
	return k.Apply(c)
}

// RemoveAll removes c's rules from both iptables and ip6tables; it tries
// both and reports both errors.
func RemoveAll(c Config) error {
	v4, v6, err := handles()
	if err != nil {
		return err
	}
	if v6 == nil {
		return Remove(v4, c, false)
	}
	return errors.Join(Remove(v4, c, false), Remove(v6, c, true))
}
