package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Keeper installs a rule set in both address families and keeps it there:
// it remembers what each family listed right after Apply, and Repair puts
// the rule set back wherever another tool deleted, changed or outranked
// it. It is safe for concurrent use; its calls run one at a time.
type Keeper struct {
	mu      sync.Mutex
	tables  [2]IPTables // IPv4, IPv6; IPv6 nil when the kernel has none
	cfg     Config      // what Apply last installed
	applied bool
	want    [2]State // each family as listed right after Apply

	// generation, when set, tells whether anything changed since the
	// last read (see SetGeneration); gen is its value at that read.
	generation func() (uint32, error)
	gen        uint32
	genKnown   bool
	unread     int // Repairs skipped on an unchanged generation in a row

	// forwards, when set, reads whether the host forwards packets
	// (HostForwards); Apply and Refit set Config.Forwarding from it.
	forwards func() bool

	// passes is 1<<32 | gen when the read of the tables at generation gen
	// found that a grant passes nothing more in mangle PREROUTING (see
	// GrantPassGeneration), else 0. The gate readers load it per batch.
	passes atomic.Uint64
}

// fullReadEvery makes Repair read the tables at least every
// fullReadEvery-th call even when the generation did not change: a safety
// net for changes the generation does not count.
const fullReadEvery = 30

// NewKeeper returns a Keeper over the given tables; v6 nil means IPv4
// only (a kernel without IPv6).
func NewKeeper(v4, v6 IPTables) *Keeper {
	return &Keeper{tables: [2]IPTables{v4, v6}}
}

// SystemKeeper returns a Keeper over the host's iptables and ip6tables.
func SystemKeeper() (*Keeper, error) {
	v4, v6, err := handles()
	if err != nil {
		return nil, err
	}
	k := NewKeeper(v4, v6)
	k.SetForwarding(HostForwards)
	if usesNFTables() {
		k.SetGeneration(nftGeneration)
	}
	return k, nil
}

// SetGeneration gives Repair a cheap change detector: gen returns a number
// that changes with every change to the rules (nf_tables' ruleset
// generation, one netlink round trip). While it returns what it returned
// at the last read, Repair skips reading the tables, except every
// fullReadEvery-th call; when it fails, Repair reads them.
func (k *Keeper) SetGeneration(gen func() (uint32, error)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.generation, k.genKnown = gen, false
}

// SetForwarding gives Apply and Refit a reader of whether the host
// forwards packets (HostForwards for the host), which decides
// Config.Forwarding and so whether the rule set uses the reject label.
func (k *Keeper) SetForwarding(forwards func() bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.forwards = forwards
}

// Finding is one family's departure from the installed rule set, found by
// Repair.
type Finding struct {
	Family  string // "iptables" or "ip6tables"
	Problem string // what was wrong, e.g. "filter INPUT has no jump to SKNOCK"
	// Err is why the rule set could not be put back; nil when it was.
	Err error
}

// Apply installs c in every family (see Apply), replacing what the Keeper
// installed before. When one family fails the others are put back as they
// were (to the previous configuration, or removed when there was none and
// Apply created them), so both families always hold the same rule set.
// With a forwarding reader (SetForwarding), c.Forwarding is what it
// reads.
func (k *Keeper) Apply(c Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.forwards != nil {
		c.Forwarding = k.forwards()
	}
	return k.applyLocked(c)
}

// Refit applies the rule set again when the host started or stopped
// forwarding since it was applied, and the change decides whether the
// rule set uses the reject label (Config.Labels): a connection forwarded
// from then on carries a label for revocation to set. It reports whether
// it applied, and whether the label is in use after. Before the first
// Apply, or without a forwarding reader, it does nothing.
func (k *Keeper) Refit() (changed, labels bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.applied || k.forwards == nil {
		return false, k.cfg.Labels(), nil
	}
	c := k.cfg
	c.Forwarding = k.forwards()
	if c.Labels() == k.cfg.Labels() {
		k.cfg.Forwarding = c.Forwarding // the same rules
		return false, c.Labels(), nil
	}
	if err := k.applyLocked(c); err != nil {
		return false, k.cfg.Labels(), err
	}
	return true, c.Labels(), nil
}

// applyLocked is Apply with k.mu held and c.Forwarding decided.
func (k *Keeper) applyLocked(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	var done []int
	var existed [2]bool
	for i, ipt := range k.tables {
		if ipt == nil {
			continue
		}
		var err error
		if existed[i], err = chainExists(ipt, c.Chain); err != nil {
			err = fmt.Errorf("%s: check chain %s: %w", family(i == 1), c.Chain, err)
		} else {
			err = Apply(ipt, c, i == 1)
		}
		if err != nil {
			return withUndo(err, k.undoLocked(done, c, existed))
		}
		done = append(done, i)
	}
	var want [2]State
	for _, i := range done {
		s, err := Inspect(k.tables[i], c)
		if err != nil {
			return fmt.Errorf("%s: list the rules just applied: %w", family(i == 1), err)
		}
		want[i] = s
	}
	k.cfg, k.applied, k.want = c, true, want
	k.genKnown = false
	k.passes.Store(0) // until Repair reads the tables at a known generation
	return nil
}

// undoLocked puts the families in done back after the next one failed:
// to the configuration applied before; with none, a chain that Apply
// created is removed, and one that was there (from boot or an earlier
// run) keeps the new rules, since removing it would uncover its ports.
func (k *Keeper) undoLocked(done []int, failed Config, existed [2]bool) error {
	var errs []error
	for _, i := range done {
		switch {
		case k.applied:
			errs = append(errs, Apply(k.tables[i], k.cfg, i == 1))
		case !existed[i]:
			errs = append(errs, Remove(k.tables[i], failed, i == 1))
		}
	}
	return errors.Join(errs...)
}

// chainExists reports whether the chain exists in mangle or filter: a
// rule set (or one from before the gate moved to mangle) is in place.
func chainExists(ipt IPTables, chain string) (bool, error) {
	for _, table := range []string{mangleTable, filterTable} {
		ok, err := ipt.ChainExists(table, chain)
		if err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// Config returns the configuration Apply last installed, and whether
// there is one.
func (k *Keeper) Config() (Config, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cfg, k.applied
}

// Repair compares every family with what Apply installed and applies the
// rule set again where they differ. It returns one Finding per family
// that differed, or that could not be listed. Before the first Apply it
// does nothing.
func (k *Keeper) Repair() []Finding {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.applied {
		return nil
	}
	gen, haveGen := uint32(0), false
	if k.generation != nil {
		if g, err := k.generation(); err == nil {
			if k.genKnown && g == k.gen && k.unread < fullReadEvery-1 {
				k.unread++
				return nil
			}
			gen, haveGen = g, true
		}
	}
	k.unread = 0
	// The generation is read before the tables, so a change that lands
	// in between is seen on the next call.
	defer func() { k.gen, k.genKnown = gen, haveGen }()
	k.passes.Store(0)
	passes := haveGen
	var found []Finding
	for i, ipt := range k.tables {
		if ipt == nil {
			continue
		}
		fam, ipv6 := family(i == 1), i == 1
		got, err := Inspect(ipt, k.cfg)
		if err != nil {
			found = append(found, Finding{Family: fam, Problem: "cannot list the rules", Err: err})
			passes = false
			continue
		}
		problem := k.want[i].Problem(k.cfg, got)
		if problem == "" {
			passes = passes && got.grantPassesNothing(k.cfg)
			continue
		}
		passes = false
		f := Finding{Family: fam, Problem: problem}
		if f.Err = Apply(ipt, k.cfg, ipv6); f.Err == nil {
			if k.want[i], err = Inspect(ipt, k.cfg); err != nil {
				f.Err = fmt.Errorf("list the rules just restored: %w", err)
			}
		}
		found = append(found, f)
	}
	if passes {
		k.passes.Store(1<<32 | uint64(gen))
	}
	return found
}

// GrantPassGeneration reports whether the gate may answer a grant with
// NF_ACCEPT instead of repeating it through mangle PREROUTING with the
// grant bit, and under which condition: ok when the last read of the
// tables found that chain holding the jump to the gate and nothing else,
// and accepting by policy, in every family; gen is the nf_tables
// generation that read was at. A grant may be accepted in place while the
// generation, read after its packet arrived, is still gen: a repeat would
// then meet nothing that the accept skips (the grant chain only clears
// the bit it set). ok is false where the generation is unknown
// (iptables-legacy) and until Repair has read the tables after Apply. It
// is safe to call from the gate readers at any time.
func (k *Keeper) GrantPassGeneration() (gen uint32, ok bool) {
	v := k.passes.Load()
	return uint32(v), v>>32 == 1
}

// grantPassesNothing reports whether, in s, mangle PREROUTING holds the
// jump to c's chain and nothing else, and accepts by policy.
func (s State) grantPassesNothing(c Config) bool {
	for _, t := range s.Tables {
		if t.Table == mangleTable {
			rules := t.Hooks["PREROUTING"]
			return t.Policies["PREROUTING"] == "ACCEPT" && len(rules) == 1 && rules[0] == (hook{"PREROUTING", c.Jump()}).rule()
		}
	}
	return false
}

// State is one family's rule set as iptables lists it ("iptables-save"):
// what Repair compares, in iptables' own spelling of the rules.
type State struct {
	Tables []TableState // one per table of the rule set: mangle, filter
}

// TableState is the rule set's share of one table as listed.
type TableState struct {
	Table  string              // "mangle" or "filter"
	Hooks  map[string][]string // built-in chain → its rules, "-A CHAIN ..."
	Chains map[string][]string // the rule set's chains there → their rules; a chain that exists has an entry
	// Policies are the built-in chains' policies ("ACCEPT", "DROP").
	Policies map[string]string
}

// Inspect reads the built-in chains that jump to c's chain, and the
// chains, in every table of the rule set, with one Save per table.
func Inspect(ipt IPTables, c Config) (State, error) {
	var s State
	for _, p := range c.parts(false) {
		text, err := ipt.Save(p.table)
		if err != nil {
			return State{}, fmt.Errorf("read the %s table: %w", p.table, err)
		}
		ts := TableState{Table: p.table, Hooks: map[string][]string{}, Chains: map[string][]string{}, Policies: map[string]string{}}
		names := p.names()
		for _, l := range strings.Split(text, "\n") {
			l = strings.TrimSpace(l)
			for _, name := range names {
				if strings.HasPrefix(l, ":"+name+" ") {
					if _, ok := ts.Chains[name]; !ok {
						ts.Chains[name] = []string{}
					}
				}
				if strings.HasPrefix(l, "-A "+name+" ") {
					ts.Chains[name] = append(ts.Chains[name], l)
				}
			}
			for _, h := range p.hooks {
				if strings.HasPrefix(l, "-A "+h.chain+" ") {
					ts.Hooks[h.chain] = append(ts.Hooks[h.chain], l)
				}
				if policy, ok := strings.CutPrefix(l, ":"+h.chain+" "); ok {
					ts.Policies[h.chain], _, _ = strings.Cut(policy, " ")
				}
			}
		}
		s.Tables = append(s.Tables, ts)
	}
	return s, nil
}

// Problem says how got fails to protect as want (the state right after
// Apply) did, in words for the operator; "" when it does not. Every jump
// must be its built-in chain's first rule, since any rule above it could
// accept (or, in mangle, let through) a protected port; surplus jumps
// further down are harmless.
func (want State) Problem(c Config, got State) string {
	for i, p := range c.parts(false) {
		if i >= len(got.Tables) || i >= len(want.Tables) {
			return fmt.Sprintf("the %s table was not read", p.table)
		}
		g := got.Tables[i]
		for _, name := range p.names() {
			if _, ok := g.Chains[name]; !ok {
				return fmt.Sprintf("chain %s is missing from the %s table", name, p.table)
			}
		}
		for _, h := range p.hooks {
			rules := g.Hooks[h.chain]
			what := "jump to " + c.Chain
			if !slices.Contains(h.jump, c.Chain) {
				what = "backstop (" + strings.Join(h.jump, " ") + ")"
			}
			switch positions := positionsOf(rules, h.rule()); {
			case len(positions) == 0:
				return fmt.Sprintf("%s %s has no %s", p.table, h.chain, what)
			case positions[0] != 1:
				return fmt.Sprintf("the %s is at %s %s position %d, behind %q", what, p.table, h.chain, positions[0], rules[0])
			}
		}
		for _, name := range p.names() {
			if problem := chainProblem(p.table, name, want.Tables[i].Chains[name], g.Chains[name]); problem != "" {
				return problem
			}
		}
	}
	return ""
}

// chainProblem names the first difference between the chain's rules as
// applied (want) and as found (got).
func chainProblem(table, chain string, want, got []string) string {
	if slices.Equal(want, got) {
		return ""
	}
	chain += " (" + table + ")"
	if len(got) == 0 {
		return fmt.Sprintf("chain %s was flushed (0 of %d rules left)", chain, len(want))
	}
	i := 0
	for i < len(want) && i < len(got) && want[i] == got[i] {
		i++
	}
	switch {
	case i == len(got) || i < len(want) && slices.Equal(got[i:], want[i+1:]):
		return fmt.Sprintf("rule %d of %s is missing: %q", i+1, chain, want[i])
	case i == len(want) || slices.Equal(got[i+1:], want[i:]):
		return fmt.Sprintf("%s has a foreign rule at %d: %q", chain, i+1, got[i])
	}
	return fmt.Sprintf("rule %d of %s changed: %q, want %q", i+1, chain, got[i], want[i])
}
