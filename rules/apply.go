package rules

import (
	"errors"
	"fmt"
	"os"
	"slices"
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

// part is the rule set's share of one table: the chain's rules there, and
// the built-in chains that jump to it first.
type part struct {
	table string
	rules [][]string
	hooks []hook
}

// parts returns the rule set, table by table: the gate in mangle, then the
// rejection in filter.
func (c Config) parts(ipv6 bool) []part {
	return []part{
		{table: mangleTable, rules: c.Rules(ipv6), hooks: []hook{{"PREROUTING", c.Jump()}, {"POSTROUTING", c.Backstop()}}},
		{table: filterTable, rules: c.RejectRules(ipv6), hooks: []hook{{inputChain, c.Jump()}, {"FORWARD", c.ForwardJump()}}},
	}
}

// applyOrder returns the parts in the order Apply installs them: the
// filter chain first when it is missing, so that no packet the gate marks
// for rejection ever finds nothing to reject it; else the gate first, so
// that replacing a filter chain that gated (sknock before containers were
// gated in mangle) never leaves a moment without a gate.
func applyOrder(parts []part, haveFilter bool) []part {
	if haveFilter {
		return parts
	}
	return []part{parts[1], parts[0]}
}

// Apply installs c's rules for one address family: the gate chain in
// mangle, which PREROUTING jumps to first, and the reject chain in filter,
// which INPUT and FORWARD jump to first, each jump exactly once. Each
// table's chain (and the jumps that are not first) goes in with one
// iptables-restore transaction, so no packet ever meets a half-built or
// missing chain: a chain left by a crash or by an earlier configuration is
// replaced whole. Surplus jumps further down are deleted after.
//
// On error the table that failed is unchanged (the one before it may hold
// the new rules already); the error names the family, table and step.
func Apply(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	fam := family(ipv6)
	haveFilter, err := ipt.ChainExists(filterTable, c.Chain)
	if err != nil {
		return fmt.Errorf("%s: check chain %s: %w", fam, c.Chain, err)
	}
	for _, p := range applyOrder(c.parts(ipv6), haveFilter) {
		if err := applyPart(ipt, c.Chain, p); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	return nil
}

// applyPart replaces one table's chain and puts its jumps first.
func applyPart(ipt IPTables, chain string, p part) error {
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
	if err := ipt.Restore(p.restoreInput(chain, insert)); err != nil {
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
// (and so flush) the chain, fill it, and put the jumps of insert first in
// their built-in chains.
func (p part) restoreInput(chain string, insert []hook) string {
	var b strings.Builder
	b.WriteString("*" + p.table + "\n:" + chain + " - [0:0]\n")
	for _, rule := range p.rules {
		b.WriteString("-A " + chain + " " + strings.Join(rule, " ") + "\n")
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
func positionsOf(rules []string, rule string) []int {
	var positions []int
	for i, l := range rules {
		if l == rule {
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
		if strings.TrimSpace(got) != h.rule() {
			return fmt.Errorf("surplus jump at %d changed under us to %q; not deleting it", pos, got)
		}
		if err := ipt.DeleteById(table, h.chain, pos); err != nil {
			return fmt.Errorf("delete surplus jump at %d: %w", pos, err)
		}
	}
	return nil
}

// withUndo joins the error of a failed rollback to the error that caused it.
func withUndo(err, undoErr error) error {
	if undoErr == nil {
		return err
	}
	return errors.Join(err, fmt.Errorf("roll back: %w", undoErr))
}

// Remove deletes every jump to the chain, then flushes and deletes the
// chain, in mangle (the gate) first, then in filter. Removing what is not
// there is not an error. This is what uncovers the protected ports: only
// an explicit command calls it.
func Remove(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.validateChain(); err != nil {
		return err
	}
	fam := family(ipv6)
	for _, p := range c.parts(ipv6) {
		if err := removePart(ipt, c.Chain, p); err != nil {
			return fmt.Errorf("%s: %w", fam, err)
		}
	}
	return nil
}

// removePart removes one table's chain and its jumps.
func removePart(ipt IPTables, chain string, p part) error {
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
	if !exists {
		return nil
	}
	if err := ipt.ClearChain(p.table, chain); err != nil {
		return fmt.Errorf("flush chain %s in %s: %w", chain, p.table, err)
	}
	if err := ipt.DeleteChain(p.table, chain); err != nil {
		return fmt.Errorf("delete chain %s in %s (is it still referenced?): %w", chain, p.table, err)
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
