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
	// Save returns the filter table as "iptables-save -t filter" prints
	// it: every chain and rule in one read.
	Save() (string, error)
}

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
// the chain first, exactly once. The chain's new contents (and, when INPUT
// does not start with the jump, the jump at position 1) go in with one
// iptables-restore transaction, so no packet ever meets a half-built or
// missing chain: a chain left by a crash or by an earlier configuration
// is replaced whole. Surplus jumps further down INPUT are deleted after.
//
// On error nothing of the transaction has changed; the error names the
// family and the step that failed.
func Apply(ipt IPTables, c Config, ipv6 bool) error {
	if err := c.Validate(); err != nil {
		return err
	}
	fam := family(ipv6)
	positions, err := jumpPositions(ipt, c)
	if err != nil {
		return fmt.Errorf("%s: list %s: %w", fam, inputChain, err)
	}
	jumpFirst := len(positions) > 0 && positions[0] == 1
	if err := ipt.Restore(c.restoreInput(ipv6, !jumpFirst)); err != nil {
		return fmt.Errorf("%s: replace chain %s (nothing was changed): %w", fam, c.Chain, err)
	}
	if err := dropSurplusJumps(ipt, c); err != nil {
		return fmt.Errorf("%s: jump from %s to %s: %w", fam, inputChain, c.Chain, err)
	}
	return nil
}

// restoreInput is the iptables-restore transaction of Apply: declare (and
// so flush) the chain, fill it, and with insertJump put the jump first in
// INPUT.
func (c Config) restoreInput(ipv6, insertJump bool) string {
	var b strings.Builder
	b.WriteString("*filter\n:" + c.Chain + " - [0:0]\n")
	for _, rule := range c.Rules(ipv6) {
		b.WriteString("-A " + c.Chain + " " + strings.Join(rule, " ") + "\n")
	}
	if insertJump {
		b.WriteString("-I " + inputChain + " 1 " + strings.Join(c.Jump(), " ") + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// jumpRule is the jump as "iptables -S INPUT" lists it.
func (c Config) jumpRule() string {
	return "-A " + inputChain + " " + strings.Join(c.Jump(), " ")
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

// jumpPositions returns the 1-based positions in INPUT of rules that are
// exactly the jump to c.Chain.
func jumpPositions(ipt IPTables, c Config) ([]int, error) {
	lines, err := ipt.List(filterTable, inputChain)
	if err != nil {
		return nil, err
	}
	return positionsOf(ruleLines(lines), c.jumpRule()), nil
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

// dropSurplusJumps deletes every jump to the chain but the first, which
// must be at INPUT position 1. Surplus jumps are deleted by position, last
// first, each checked just before deletion so that a rule another tool
// inserted in the meantime is never deleted.
func dropSurplusJumps(ipt IPTables, c Config) error {
	positions, err := jumpPositions(ipt, c)
	if err != nil {
		return fmt.Errorf("list: %w", err)
	}
	if len(positions) == 0 || positions[0] != 1 {
		return fmt.Errorf("not the first rule of %s right after it was put there (another tool is changing %s)", inputChain, inputChain)
	}
	for _, pos := range slices.Backward(positions[1:]) {
		got, err := ipt.ListById(filterTable, inputChain, pos)
		if err != nil {
			return fmt.Errorf("check surplus jump at %d: %w", pos, err)
		}
		if strings.TrimSpace(got) != c.jumpRule() {
			return fmt.Errorf("surplus jump at %d changed under us to %q; not deleting it", pos, got)
		}
		if err := ipt.DeleteById(filterTable, inputChain, pos); err != nil {
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

// Remove deletes every jump from INPUT to the chain, then flushes and
// deletes the chain. Removing what is not there is not an error. This is
// what uncovers the protected ports: only an explicit command calls it.
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
