package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// Finding is one family's departure from the installed rule set, found by
// Repair.
type Finding struct {
	Family  string // "iptables" or "ip6tables"
	Problem string // what was wrong, e.g. "INPUT has no jump to SKNOCK"
	// Err is why the rule set could not be put back; nil when it was.
	Err error
}

// Apply installs c in every family (see Apply), replacing what the Keeper
// installed before. When one family fails the others are put back as they
// were (to the previous configuration, or removed when there was none and
// Apply created them), so both families always hold the same rule set.
func (k *Keeper) Apply(c Config) error {
	k.mu.Lock()
	defer k.mu.Unlock()
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
		if existed[i], err = ipt.ChainExists(filterTable, c.Chain); err != nil {
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
	var found []Finding
	for i, ipt := range k.tables {
		if ipt == nil {
			continue
		}
		fam, ipv6 := family(i == 1), i == 1
		got, err := Inspect(ipt, k.cfg)
		if err != nil {
			found = append(found, Finding{Family: fam, Problem: "cannot list the rules", Err: err})
			continue
		}
		problem := k.want[i].Problem(k.cfg, got)
		if problem == "" {
			continue
		}
		f := Finding{Family: fam, Problem: problem}
		if f.Err = Apply(ipt, k.cfg, ipv6); f.Err == nil {
			if k.want[i], err = Inspect(ipt, k.cfg); err != nil {
				f.Err = fmt.Errorf("list the rules just restored: %w", err)
			}
		}
		found = append(found, f)
	}
	return found
}

// State is one family's rule set as iptables lists it ("iptables -S"):
// what Repair compares, in iptables' own spelling of the rules.
type State struct {
	Input    []string // INPUT's rules, "-A INPUT ..."
	Chain    []string // the chain's rules, "-A CHAIN ..."
	HasChain bool     // the chain exists
}

// Inspect reads INPUT and c's chain with one Save.
func Inspect(ipt IPTables, c Config) (State, error) {
	text, err := ipt.Save()
	if err != nil {
		return State{}, fmt.Errorf("read the filter table: %w", err)
	}
	var s State
	for _, l := range strings.Split(text, "\n") {
		switch l = strings.TrimSpace(l); {
		case strings.HasPrefix(l, ":"+c.Chain+" "):
			s.HasChain = true
		case strings.HasPrefix(l, "-A "+inputChain+" "):
			s.Input = append(s.Input, l)
		case strings.HasPrefix(l, "-A "+c.Chain+" "):
			s.Chain = append(s.Chain, l)
		}
	}
	return s, nil
}

// Problem says how got fails to protect as want (the state right after
// Apply) did, in words for the operator; "" when it does not. The jump
// must be INPUT's first rule, since any rule above it could accept a
// protected port; surplus jumps further down are harmless.
func (want State) Problem(c Config, got State) string {
	if !got.HasChain {
		return fmt.Sprintf("chain %s is missing", c.Chain)
	}
	switch positions := positionsOf(got.Input, c.jumpRule()); {
	case len(positions) == 0:
		return fmt.Sprintf("%s has no jump to %s", inputChain, c.Chain)
	case positions[0] != 1:
		return fmt.Sprintf("the jump to %s is at %s position %d, behind %q", c.Chain, inputChain, positions[0], got.Input[0])
	}
	return chainProblem(c.Chain, want.Chain, got.Chain)
}

// chainProblem names the first difference between the chain's rules as
// applied (want) and as found (got).
func chainProblem(chain string, want, got []string) string {
	if slices.Equal(want, got) {
		return ""
	}
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
