package rules

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// IPTables is the part of *iptables.IPTables (github.com/coreos/go-iptables)
// that Apply and Remove use; rulestest.Table is the in-memory fake.
type IPTables interface {
	ChainExists(table, chain string) (bool, error)
	NewChain(table, chain string) error
	ClearChain(table, chain string) error
	DeleteChain(table, chain string) error
	Append(table, chain string, rulespec ...string) error
	Insert(table, chain string, pos int, rulespec ...string) error
	Exists(table, chain string, rulespec ...string) (bool, error)
	Delete(table, chain string, rulespec ...string) error
	DeleteById(table, chain string, id int) error
	List(table, chain string) ([]string, error)
	ListById(table, chain string, id int) (string, error)
}

var _ IPTables = (*iptables.IPTables)(nil)

const (
	filterTable = "filter"
	inputChain  = "INPUT"
	// maxJumps bounds the loops that delete INPUT jumps, in case a Delete
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

// Apply installs c's rules for one address family and makes INPUT jump to
// the chain first, exactly once. It is idempotent and safe after a crash:
// a chain left behind is reused, the new rules are appended behind the old
// ones and only then are the old ones deleted from the top, so protected
// ports stay closed throughout; surplus or misplaced jumps are repaired.
//
// On error Apply undoes what it did: a chain it created is removed with its
// jump; a chain it found keeps its previous rules if they were not replaced
// yet. The error names the family and the rule or step that failed.
func Apply(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	fam := family(ipv6)
	existed, err := ipt.ChainExists(filterTable, c.Chain)
	if err != nil {
		return fmt.Errorf("%s: check chain %s: %w", fam, c.Chain, err)
	}
	old := 0
	if existed {
		if old, err = countRules(ipt, c.Chain); err != nil {
			return fmt.Errorf("%s: list leftover chain %s: %w", fam, c.Chain, err)
		}
	} else if err := ipt.NewChain(filterTable, c.Chain); err != nil {
		return fmt.Errorf("%s: create chain %s: %w", fam, c.Chain, err)
	}
	undo := func(appended int) error {
		if !existed {
			return Remove(ipt, c, ipv6)
		}
		for range appended {
			if err := ipt.DeleteById(filterTable, c.Chain, old+1); err != nil {
				return err
			}
		}
		return nil
	}
	for i, rule := range c.Rules(ipv6) {
		if err := ipt.Append(filterTable, c.Chain, rule...); err != nil {
			err = fmt.Errorf("%s: append rule %d to %s (%s): %w", fam, i+1, c.Chain, strings.Join(rule, " "), err)
			return withUndo(err, undo(i))
		}
	}
	// Delete the leftover rules from the top: every intermediate chain is
	// a remainder of the old rules in front of the complete new ones.
	for i := range old {
		if err := ipt.DeleteById(filterTable, c.Chain, 1); err != nil {
			return fmt.Errorf("%s: delete leftover rule %d of %d from %s (the new rules are in place behind the rest): %w", fam, i+1, old, c.Chain, err)
		}
	}
	if err := ensureJump(ipt, c); err != nil {
		err = fmt.Errorf("%s: jump from %s to %s: %w", fam, inputChain, c.Chain, err)
		if !existed {
			return withUndo(err, Remove(ipt, c, ipv6))
		}
		return err
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

// countRules returns how many rules chain holds.
func countRules(ipt IPTables, chain string) (int, error) {
	lines, err := ipt.List(filterTable, chain)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "-A ") {
			n++
		}
	}
	return n, nil
}

// jumpPositions returns the 1-based positions in INPUT of rules that are
// exactly the jump to c.Chain.
func jumpPositions(ipt IPTables, c Config) ([]int, error) {
	lines, err := ipt.List(filterTable, inputChain)
	if err != nil {
		return nil, err
	}
	want := "-A " + inputChain + " " + strings.Join(c.Jump(), " ")
	var positions []int
	pos := 0
	for _, l := range lines {
		if !strings.HasPrefix(l, "-A ") {
			continue
		}
		pos++
		if strings.TrimSpace(l) == want {
			positions = append(positions, pos)
		}
	}
	return positions, nil
}

// ensureJump leaves exactly one jump to the chain, at INPUT position 1.
// A new jump is inserted before stale ones are deleted, so the chain is
// never bypassed. Stale jumps are deleted by position, last first, each
// checked just before deletion so that a rule another tool inserted in
// the meantime is never deleted.
func ensureJump(ipt IPTables, c Config) error {
	positions, err := jumpPositions(ipt, c)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	stale := positions
	if len(positions) > 0 && positions[0] == 1 {
		stale = positions[1:]
	} else {
		if err := ipt.Insert(filterTable, inputChain, 1, c.Jump()...); err != nil {
			return fmt.Errorf("insert at 1: %w", err)
		}
		for i := range stale {
			stale[i]++
		}
	}
	want := "-A " + inputChain + " " + strings.Join(c.Jump(), " ")
	for i := len(stale) - 1; i >= 0; i-- {
		got, err := ipt.ListById(filterTable, inputChain, stale[i])
		if err != nil {
			return fmt.Errorf("check surplus jump at %d: %w", stale[i], err)
		}
		if strings.TrimSpace(got) != want {
			return fmt.Errorf("surplus jump at %d changed under us to %q; not deleting it", stale[i], got)
		}
		if err := ipt.DeleteById(filterTable, inputChain, stale[i]); err != nil {
			return fmt.Errorf("delete surplus jump at %d: %w", stale[i], err)
		}
	}
	return nil
}

// Remove deletes every jump from INPUT to the chain, then flushes and
// deletes the chain. Removing what is not there is not an error.
func Remove(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.validateChain(); err != nil {
		return err
	}
	fam := family(ipv6)
	// No chain, no jump: iptables refuses to delete a chain still jumped to.
	exists, err := ipt.ChainExists(filterTable, c.Chain)
	if err != nil {
		return fmt.Errorf("%s: check chain %s: %w", fam, c.Chain, err)
	}
	if !exists {
		return nil
	}
	for range maxJumps {
		ok, err := ipt.Exists(filterTable, inputChain, c.Jump()...)
		if err != nil {
			return fmt.Errorf("%s: check jump from %s to %s: %w", fam, inputChain, c.Chain, err)
		}
		if !ok {
			break
		}
		if err := ipt.Delete(filterTable, inputChain, c.Jump()...); err != nil {
			return fmt.Errorf("%s: delete jump from %s to %s: %w", fam, inputChain, c.Chain, err)
		}
	}
	if err := ipt.ClearChain(filterTable, c.Chain); err != nil {
		return fmt.Errorf("%s: flush chain %s: %w", fam, c.Chain, err)
	}
	if err := ipt.DeleteChain(filterTable, c.Chain); err != nil {
		return fmt.Errorf("%s: delete chain %s (is it still referenced?): %w", fam, c.Chain, err)
	}
	return nil
}

// handles opens go-iptables handles for iptables and ip6tables.
// inet6Path exists when the kernel has IPv6; booted with ipv6.disable=1 it
// does not, and no IPv6 packet can reach the host.
const inet6Path = "/proc/net/if_inet6"

// IPv6Enabled reports whether the running kernel has IPv6, and so whether
// the rules need ip6tables too.
func IPv6Enabled() bool {
	_, err := os.Stat(inet6Path)
	return err == nil
}

// handles returns the system's iptables handles; v6 is nil when the
// kernel has no IPv6. A kernel with IPv6 but no working ip6tables is an
// error: the ports would be hidden over IPv4 only.
func handles() (v4, v6 IPTables, err error) {
	h4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return nil, nil, fmt.Errorf("iptables: %w", err)
	}
	if !IPv6Enabled() {
		return h4, nil, nil
	}
	h6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6))
	if err != nil {
		return nil, nil, fmt.Errorf("ip6tables (the kernel has IPv6, so its rules are needed too): %w", err)
	}
	return h4, h6, nil
}

// ApplyAll applies c with the system's iptables and ip6tables (iptables
// alone when the kernel has no IPv6). When IPv6 fails, the IPv4 rules are
// removed again if ApplyAll created them; a chain that was there before is
// kept (rebuilt), since removing it would open the ports it kept closed.
func ApplyAll(c Config) error {
	v4, v6, err := handles()
	if err != nil {
		return err
	}
	return applyBoth(v4, v6, c)
}

// applyBoth is ApplyAll with the handles passed in; v6 nil means IPv4 only.
func applyBoth(v4, v6 IPTables, c Config) error {
	existed, err := v4.ChainExists(filterTable, c.Chain)
	if err != nil {
		return fmt.Errorf("iptables: check chain %s: %w", c.Chain, err)
	}
	if err := Apply(v4, c, false); err != nil {
		return err
	}
	if v6 == nil {
		return nil
	}
	if err := Apply(v6, c, true); err != nil {
		if existed {
			return err
		}
		return withUndo(err, Remove(v4, c, false))
	}
	return nil
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
