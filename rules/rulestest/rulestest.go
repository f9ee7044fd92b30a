// Package rulestest provides Table, an in-memory stand-in for one address
// family's iptables (its filter and mangle tables) that satisfies
// rules.IPTables, for tests that must not need root.
package rulestest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// builtins lists each table's built-in chains, which always exist.
var builtins = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
}

// Table is an in-memory iptables of one address family: its filter and
// mangle tables. Rules are stored as their specs joined with single spaces
// and compared exactly, without the normalisation real iptables applies.
// It is safe for concurrent use, as the kernel's tables are: a daemon may
// repair while a test tampers.
type Table struct {
	mu     sync.Mutex
	tables map[string]map[string][]string // table → chain name → rule specs, in order
	// FailOn, when set, is called before every change (op is "NewChain",
	// "ClearChain", "DeleteChain", "Append", "Insert", "Delete",
	// "DeleteById", or "Restore" and "Save", whose chain is the table's
	// name); a non-nil result fails that call unchanged. It runs with the
	// table locked, so it must not call the table's methods.
	FailOn func(op, chain string, rulespec []string) error
}

// New returns filter and mangle tables with empty built-in chains.
func New() *Table {
	t := &Table{tables: map[string]map[string][]string{}}
	for table, chains := range builtins {
		t.tables[table] = map[string][]string{}
		for _, c := range chains {
			t.tables[table][c] = nil
		}
	}
	return t
}

// SetFailOn sets FailOn while other goroutines may use the table.
func (t *Table) SetFailOn(f func(op, chain string, rulespec []string) error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.FailOn = f
}

// Rules returns the filter table's chain's rule specs, each joined with
// spaces, or nil when the chain does not exist.
func (t *Table) Rules(chain string) []string { return t.TableRules("filter", chain) }

// TableRules returns a chain's rule specs in table, each joined with
// spaces, or nil when the chain does not exist.
func (t *Table) TableRules(table, chain string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.tables[table][chain])
}

// Chains returns the names of the filter table's chains, sorted.
func (t *Table) Chains() []string { return t.TableChains("filter") }

// TableChains returns the names of table's chains, sorted.
func (t *Table) TableChains(table string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for c := range t.tables[table] {
		names = append(names, c)
	}
	slices.Sort(names)
	return names
}

func (t *Table) fail(op, chain string, spec []string) error {
	if t.FailOn == nil {
		return nil
	}
	return t.FailOn(op, chain, spec)
}

func (t *Table) lookup(table, chain string) ([]string, error) {
	chains, ok := t.tables[table]
	if !ok {
		return nil, fmt.Errorf("rulestest: table %q not supported", table)
	}
	rules, ok := chains[chain]
	if !ok {
		return nil, fmt.Errorf("rulestest: no chain %q", chain)
	}
	return rules, nil
}

// ChainExists reports whether chain exists.
func (t *Table) ChainExists(table, chain string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.lookup(table, chain)
	return err == nil, nil
}

// NewChain creates chain; it fails when chain exists.
func (t *Table) NewChain(table, chain string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.lookup(table, chain); err == nil {
		return fmt.Errorf("rulestest: chain %q exists", chain)
	}
	if err := t.fail("NewChain", chain, nil); err != nil {
		return err
	}
	t.tables[table][chain] = nil
	return nil
}

// ClearChain flushes chain, creating it when missing.
func (t *Table) ClearChain(table, chain string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.tables[table]; !ok {
		return fmt.Errorf("rulestest: table %q not supported", table)
	}
	if err := t.fail("ClearChain", chain, nil); err != nil {
		return err
	}
	t.tables[table][chain] = nil
	return nil
}

// DeleteChain deletes an empty, unreferenced, user-defined chain.
func (t *Table) DeleteChain(table, chain string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	switch {
	case err != nil:
		return err
	case slices.Contains(builtins[table], chain):
		return fmt.Errorf("rulestest: cannot delete built-in chain %q", chain)
	case len(rules) > 0:
		return fmt.Errorf("rulestest: chain %q not empty", chain)
	}
	for name, rules := range t.tables[table] {
		for _, r := range rules {
			if slices.Contains(strings.Fields(r), chain) {
				return fmt.Errorf("rulestest: chain %q referenced from %q", chain, name)
			}
		}
	}
	if err := t.fail("DeleteChain", chain, nil); err != nil {
		return err
	}
	delete(t.tables[table], chain)
	return nil
}

// Append adds rulespec at the end of chain.
func (t *Table) Append(table, chain string, rulespec ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return err
	}
	if err := t.fail("Append", chain, rulespec); err != nil {
		return err
	}
	t.tables[table][chain] = append(rules, strings.Join(rulespec, " "))
	return nil
}

// Insert puts rulespec at 1-based position pos of chain.
func (t *Table) Insert(table, chain string, pos int, rulespec ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return err
	}
	if pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("rulestest: index %d out of range in %q", pos, chain)
	}
	if err := t.fail("Insert", chain, rulespec); err != nil {
		return err
	}
	t.tables[table][chain] = slices.Insert(rules, pos-1, strings.Join(rulespec, " "))
	return nil
}

// Exists reports whether chain holds rulespec.
func (t *Table) Exists(table, chain string, rulespec ...string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return false, err
	}
	return slices.Contains(rules, strings.Join(rulespec, " ")), nil
}

// Delete removes the first rule of chain equal to rulespec.
func (t *Table) Delete(table, chain string, rulespec ...string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return err
	}
	i := slices.Index(rules, strings.Join(rulespec, " "))
	if i < 0 {
		return fmt.Errorf("rulestest: no rule %q in %q", strings.Join(rulespec, " "), chain)
	}
	if err := t.fail("Delete", chain, rulespec); err != nil {
		return err
	}
	t.tables[table][chain] = slices.Delete(rules, i, i+1)
	return nil
}

// DeleteById removes the rule at 1-based position id of chain.
func (t *Table) DeleteById(table, chain string, id int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return err
	}
	if id < 1 || id > len(rules) {
		return fmt.Errorf("rulestest: index %d out of range in %q", id, chain)
	}
	if err := t.fail("DeleteById", chain, []string{rules[id-1]}); err != nil {
		return err
	}
	t.tables[table][chain] = slices.Delete(rules, id-1, id)
	return nil
}

// List returns chain as "iptables -S chain" prints it: the policy or
// declaration line, then one "-A chain spec" line per rule.
func (t *Table) List(table, chain string) ([]string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return nil, err
	}
	head := "-N " + chain
	if slices.Contains(builtins[table], chain) {
		head = "-P " + chain + " ACCEPT"
	}
	lines := []string{head}
	for _, r := range rules {
		lines = append(lines, "-A "+chain+" "+r)
	}
	return lines, nil
}

// ListById returns the rule at 1-based position id as "-A chain spec".
func (t *Table) ListById(table, chain string, id int) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rules, err := t.lookup(table, chain)
	if err != nil {
		return "", err
	}
	if id < 1 || id > len(rules) {
		return "", fmt.Errorf("rulestest: index %d out of range in %q", id, chain)
	}
	return "-A " + chain + " " + rules[id-1], nil
}

// Save renders table as "iptables-save -t TABLE" would: chain
// declarations (built-in chains first), then every rule, then COMMIT.
func (t *Table) Save(table string) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	chains, ok := t.tables[table]
	if !ok {
		return "", fmt.Errorf("rulestest: table %q not supported", table)
	}
	if err := t.fail("Save", table, nil); err != nil {
		return "", err
	}
	builtin := builtins[table]
	var names []string
	for c := range chains {
		if !slices.Contains(builtin, c) {
			names = append(names, c)
		}
	}
	slices.Sort(names)
	names = append(slices.Clone(builtin), names...)
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for _, c := range names {
		policy := "-"
		if slices.Contains(builtin, c) {
			policy = "ACCEPT"
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c, policy)
	}
	for _, c := range names {
		for _, r := range chains[c] {
			fmt.Fprintf(&b, "-A %s %s\n", c, r)
		}
	}
	b.WriteString("COMMIT\n")
	return b.String(), nil
}

// Restore applies an iptables-restore --noflush transaction of one table:
// "*filter" or "*mangle", chain declarations ":NAME - [0:0]" (created, or
// flushed when they exist), "-A CHAIN spec", "-I CHAIN [N] spec",
// "-D CHAIN spec", "COMMIT" and blank lines. Like the real one it changes
// the table whole or, on any error (FailOn's op is "Restore"), not at all.
// Input holding more than one table is refused: the real command commits
// each table on its own, which the rules package must not rely on.
func (t *Table) Restore(input string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var table string
	var work map[string][]string
	committed := false
	for n, line := range strings.Split(input, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		bad := func(why string) error {
			return fmt.Errorf("rulestest: restore line %d %q: %s", n+1, line, why)
		}
		if committed {
			return bad("after COMMIT")
		}
		switch {
		case strings.HasPrefix(f[0], "*"):
			if work != nil {
				return bad("a second table")
			}
			chains, ok := t.tables[f[0][1:]]
			if !ok {
				return bad("no such table")
			}
			table, work = f[0][1:], map[string][]string{}
			for name, rules := range chains {
				work[name] = slices.Clone(rules)
			}
		case work == nil:
			return bad("before the table line")
		case f[0] == "COMMIT":
			committed = true
		case strings.HasPrefix(f[0], ":"):
			work[f[0][1:]] = nil
		case len(f) < 2:
			return bad("too short")
		case f[0] == "-A" || f[0] == "-I" || f[0] == "-D":
			rules, ok := work[f[1]]
			if !ok {
				return bad("no such chain")
			}
			spec := f[2:]
			switch f[0] {
			case "-A":
				work[f[1]] = append(rules, strings.Join(spec, " "))
			case "-I":
				pos := 1
				if len(spec) > 0 {
					if p, err := strconv.Atoi(spec[0]); err == nil {
						pos, spec = p, spec[1:]
					}
				}
				if pos < 1 || pos > len(rules)+1 {
					return bad("index out of range")
				}
				work[f[1]] = slices.Insert(rules, pos-1, strings.Join(spec, " "))
			case "-D":
				i := slices.Index(rules, strings.Join(spec, " "))
				if i < 0 {
					return bad("no such rule")
				}
				work[f[1]] = slices.Delete(rules, i, i+1)
			}
		default:
			return bad("not understood")
		}
	}
	if !committed {
		return fmt.Errorf("rulestest: restore without COMMIT")
	}
	if err := t.fail("Restore", table, nil); err != nil {
		return err
	}
	t.tables[table] = work
	return nil
}
