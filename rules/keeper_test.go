package rules_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/rules"
	"sknock/rules/rulestest"
)

// failRestore makes tab's next Restore fail with err.
func failRestore(tab *rulestest.Table, err error) {
	tab.FailOn = func(op, chain string, spec []string) error {
		if op == "Restore" {
			return err
		}
		return nil
	}
}

func TestKeeperApplyBothFamilies(t *testing.T) {
	c := designConfig(t)
	v4, v6 := rulestest.New(), rulestest.New()
	k := rules.NewKeeper(v4, v6)
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, v4, c, false, nil)
	checkApplied(t, v6, c, true, nil)
	if got, ok := k.Config(); !ok || got.Chain != c.Chain {
		t.Errorf("Config() = %v, %v; want the applied config", got.Chain, ok)
	}

	// A kernel without IPv6 gets no ip6tables handle: IPv4 alone.
	only4 := rulestest.New()
	if err := rules.NewKeeper(only4, nil).Apply(c); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, only4, c, false, nil)
}

// TestKeeperApplyRollsBack checks that when IPv6 fails, IPv4 goes back to
// what it held: nothing on a first start, the previous configuration on a
// reload, and, on a first start over rules from boot, the new rules (never
// removed, which would uncover the ports).
func TestKeeperApplyRollsBack(t *testing.T) {
	errBoom := errors.New("boom")
	c := designConfig(t)
	wider := designConfig(t)
	wider.Protect = specs(t, "tcp/2000", "tcp/3000", "tcp/4000", "udp/8000")

	t.Run("first start", func(t *testing.T) {
		v4, v6 := rulestest.New(), rulestest.New()
		failRestore(v6, errBoom)
		err := rules.NewKeeper(v4, v6).Apply(c)
		if !errors.Is(err, errBoom) || !contains(err.Error(), "ip6tables") {
			t.Fatalf("Apply = %v, want boom from ip6tables", err)
		}
		if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT"}, v4.Chains()); diff != "" {
			t.Errorf("IPv4 filter chains (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff([]string{"FORWARD", "INPUT", "OUTPUT", "POSTROUTING", "PREROUTING"}, v4.TableChains("mangle")); diff != "" {
			t.Errorf("IPv4 mangle chains (-want +got):\n%s", diff)
		}
		for _, h := range hooks {
			if got := v4.TableRules(h.table, h.chain); len(got) != 0 {
				t.Errorf("IPv4 %s %s = %q, want empty", h.table, h.chain, got)
			}
		}
	})
	t.Run("reload", func(t *testing.T) {
		v4, v6 := rulestest.New(), rulestest.New()
		k := rules.NewKeeper(v4, v6)
		if err := k.Apply(c); err != nil {
			t.Fatal(err)
		}
		failRestore(v6, errBoom)
		if err := k.Apply(wider); !errors.Is(err, errBoom) {
			t.Fatalf("Apply = %v, want boom", err)
		}
		checkApplied(t, v4, c, false, nil)
		checkApplied(t, v6, c, true, nil)
		if got, _ := k.Config(); len(got.Protect) != len(c.Protect) {
			t.Errorf("Config() after a failed Apply protects %v, want the old %v", got.Protect, c.Protect)
		}
	})
	t.Run("over rules from boot", func(t *testing.T) {
		v4, v6 := rulestest.New(), rulestest.New()
		if err := rules.Apply(v4, c, false); err != nil {
			t.Fatal(err)
		}
		failRestore(v6, errBoom)
		if err := rules.NewKeeper(v4, v6).Apply(c); !errors.Is(err, errBoom) {
			t.Fatalf("Apply = %v, want boom", err)
		}
		checkApplied(t, v4, c, false, nil)
	})
	t.Run("over the filter-only layout from boot", func(t *testing.T) {
		v4, v6 := rulestest.New(), rulestest.New()
		oldLayout(v4, c)
		failRestore(v6, errBoom)
		if err := rules.NewKeeper(v4, v6).Apply(c); !errors.Is(err, errBoom) {
			t.Fatalf("Apply = %v, want boom", err)
		}
		// The chain was there, so IPv4 keeps the new rules rather than
		// losing its gate.
		checkApplied(t, v4, c, false, nil)
	})
}

// TestKeeperRepair tampers with the applied rules the ways other tools do
// (in both tables, with each of the three jumps and the backstop) and
// checks that
// Repair names the damage, with table and chain, and undoes it, leaving
// foreign rules in place.
func TestKeeperRepair(t *testing.T) {
	c := designConfig(t)
	tests := []struct {
		name   string
		tamper func(tab *rulestest.Table)
		want   string              // in the problem
		others map[string][]string // each hook's rules after the jump once repaired
	}{
		{
			name:   "mangle PREROUTING jump deleted",
			tamper: func(tab *rulestest.Table) { tab.Delete("mangle", "PREROUTING", "-j", "SKNOCK") },
			want:   "mangle PREROUTING has no jump to SKNOCK",
		},
		{
			name:   "filter INPUT jump deleted",
			tamper: func(tab *rulestest.Table) { tab.Delete("filter", "INPUT", "-j", "SKNOCK") },
			want:   "filter INPUT has no jump to SKNOCK",
		},
		{
			name: "filter FORWARD jump deleted",
			tamper: func(tab *rulestest.Table) {
				tab.Delete("filter", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SKNOCK")
			},
			want: "filter FORWARD has no jump to SKNOCK",
		},
		{
			name: "mangle POSTROUTING backstop deleted",
			tamper: func(tab *rulestest.Table) {
				tab.Delete("mangle", "POSTROUTING", c.Backstop()...)
			},
			want: "mangle POSTROUTING has no",
		},
		{
			name: "accept above the POSTROUTING backstop",
			tamper: func(tab *rulestest.Table) {
				tab.Insert("mangle", "POSTROUTING", 1, "-o", "docker0", "-j", "ACCEPT")
			},
			want:   `at mangle POSTROUTING position 2, behind "-A POSTROUTING -o docker0 -j ACCEPT"`,
			others: map[string][]string{"POSTROUTING": {"-o docker0 -j ACCEPT"}},
		},
		{
			name:   "gate chain flushed",
			tamper: func(tab *rulestest.Table) { tab.ClearChain("mangle", "SKNOCK") },
			want:   "chain SKNOCK (mangle) was flushed",
		},
		{
			name:   "reject chain flushed",
			tamper: func(tab *rulestest.Table) { tab.ClearChain("filter", "SKNOCK") },
			want:   "chain SKNOCK (filter) was flushed",
		},
		{
			name: "gate chain deleted",
			tamper: func(tab *rulestest.Table) {
				tab.Delete("mangle", "PREROUTING", "-j", "SKNOCK")
				tab.ClearChain("mangle", "SKNOCK")
				tab.DeleteChain("mangle", "SKNOCK")
			},
			want: "chain SKNOCK is missing from the mangle table",
		},
		{
			name: "reject chain deleted",
			tamper: func(tab *rulestest.Table) {
				tab.Delete("filter", "INPUT", "-j", "SKNOCK")
				tab.Delete("filter", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SKNOCK")
				tab.ClearChain("filter", "SKNOCK")
				tab.DeleteChain("filter", "SKNOCK")
			},
			want: "chain SKNOCK is missing from the filter table",
		},
		{
			name:   "one gate rule deleted",
			tamper: func(tab *rulestest.Table) { tab.DeleteById("mangle", "SKNOCK", 6) },
			want:   "rule 6 of SKNOCK (mangle) is missing",
		},
		{
			name:   "one reject rule deleted",
			tamper: func(tab *rulestest.Table) { tab.DeleteById("filter", "SKNOCK", 2) },
			want:   "rule 2 of SKNOCK (filter) is missing",
		},
		{
			name:   "rule inserted",
			tamper: func(tab *rulestest.Table) { tab.Insert("mangle", "SKNOCK", 2, "-j", "ACCEPT") },
			want:   "SKNOCK (mangle) has a foreign rule at 2",
		},
		{
			name: "rule changed",
			tamper: func(tab *rulestest.Table) {
				tab.DeleteById("mangle", "SKNOCK", 3)
				tab.Insert("mangle", "SKNOCK", 3, "-p", "tcp", "-j", "ACCEPT")
			},
			want: "rule 3 of SKNOCK (mangle) changed",
		},
		{
			name: "accept above the INPUT jump",
			tamper: func(tab *rulestest.Table) {
				tab.Insert("filter", "INPUT", 1, "-p", "tcp", "--dport", "2000", "-j", "ACCEPT")
			},
			want:   `at filter INPUT position 2, behind "-A INPUT -p tcp --dport 2000 -j ACCEPT"`,
			others: map[string][]string{"INPUT": {"-p tcp --dport 2000 -j ACCEPT"}},
		},
		{
			name: "accept above the PREROUTING jump",
			tamper: func(tab *rulestest.Table) {
				tab.Insert("mangle", "PREROUTING", 1, "-p", "tcp", "--dport", "2000", "-j", "ACCEPT")
			},
			want:   `at mangle PREROUTING position 2, behind "-A PREROUTING -p tcp --dport 2000 -j ACCEPT"`,
			others: map[string][]string{"PREROUTING": {"-p tcp --dport 2000 -j ACCEPT"}},
		},
		{
			name:   "DOCKER-USER above the FORWARD jump",
			tamper: func(tab *rulestest.Table) { tab.Insert("filter", "FORWARD", 1, "-j", "DOCKER-USER") },
			want:   `at filter FORWARD position 2, behind "-A FORWARD -j DOCKER-USER"`,
			others: map[string][]string{"FORWARD": {"-j DOCKER-USER"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v4, v6 := rulestest.New(), rulestest.New()
			k := rules.NewKeeper(v4, v6)
			if err := k.Apply(c); err != nil {
				t.Fatal(err)
			}
			if found := k.Repair(); len(found) != 0 {
				t.Fatalf("Repair on intact rules = %+v, want nothing", found)
			}
			tt.tamper(v6)
			found := k.Repair()
			if len(found) != 1 || found[0].Family != "ip6tables" || !strings.Contains(found[0].Problem, tt.want) || found[0].Err != nil {
				t.Fatalf("Repair = %+v, want one ip6tables finding containing %q, repaired", found, tt.want)
			}
			checkApplied(t, v6, c, true, tt.others)
			checkApplied(t, v4, c, false, nil)
			if found := k.Repair(); len(found) != 0 {
				t.Errorf("Repair after repairing = %+v, want nothing", found)
			}
		})
	}
}

// TestKeeperRepairFails checks that a repair that fails is reported with
// its error, and tried again (and reported again) on the next Repair.
func TestKeeperRepairFails(t *testing.T) {
	errBoom := errors.New("boom")
	c := designConfig(t)
	v4 := rulestest.New()
	k := rules.NewKeeper(v4, nil)
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	if found := rules.NewKeeper(v4, nil).Repair(); found != nil {
		t.Errorf("Repair before any Apply = %+v, want nothing", found)
	}
	v4.ClearChain("mangle", "SKNOCK")
	failRestore(v4, errBoom)
	for range 2 {
		found := k.Repair()
		if len(found) != 1 || !errors.Is(found[0].Err, errBoom) {
			t.Fatalf("Repair = %+v, want one finding failing with boom", found)
		}
	}
	v4.FailOn = nil
	if found := k.Repair(); len(found) != 1 || found[0].Err != nil {
		t.Fatalf("Repair = %+v, want the repair to succeed", found)
	}
	checkApplied(t, v4, c, false, nil)
}

// TestKeeperRepairSkipsUnchangedGeneration checks that Repair reads the
// tables only when the generation moved, or every 30th call, and always
// when the generation cannot be read.
func TestKeeperRepairSkipsUnchangedGeneration(t *testing.T) {
	c := designConfig(t)
	v4 := rulestest.New()
	k := rules.NewKeeper(v4, nil)
	var gen uint32 = 7
	var genErr error
	k.SetGeneration(func() (uint32, error) { return gen, genErr })
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	// A read of the tables is one Save of each: count the mangle ones,
	// and check the filter ones keep pace.
	reads, filterReads := 0, 0
	v4.SetFailOn(func(op, chain string, spec []string) error {
		switch {
		case op == "Save" && chain == "mangle":
			reads++
		case op == "Save" && chain == "filter":
			filterReads++
		}
		return nil
	})
	defer func() {
		if reads != filterReads {
			t.Errorf("%d Saves of mangle, %d of filter: want one of each per read", reads, filterReads)
		}
	}()
	k.Repair() // the first call after Apply reads
	if reads != 1 {
		t.Fatalf("first Repair read the tables %d times, want 1", reads)
	}

	// A change the generation does not show is found by the safety net.
	v4.Delete("mangle", "PREROUTING", "-j", "SKNOCK")
	calls := 0
	for found := k.Repair(); len(found) == 0; found = k.Repair() {
		if calls++; calls > 40 {
			t.Fatal("an unseen change was never found")
		}
	}
	// Reads: the first Repair, the safety net's, and the one recording
	// the repaired state.
	if calls != 29 || reads != 3 {
		t.Errorf("found after %d skipped calls and %d reads, want 29 and 3", calls, reads)
	}
	checkApplied(t, v4, c, false, nil)

	// A moved generation is read at once.
	k.Repair() // reads once more: the repair's own change
	v4.ClearChain("filter", "SKNOCK")
	gen++
	if found := k.Repair(); len(found) != 1 {
		t.Errorf("Repair after the generation moved = %+v, want the flushed chain", found)
	}

	// No generation: read every time.
	genErr = errors.New("no nf_tables")
	before := reads
	for range 3 {
		k.Repair()
	}
	if reads-before != 3 {
		t.Errorf("without a generation Repair read %d times in 3 calls, want 3", reads-before)
	}
}

// TestKeeperGrantPassGeneration: a grant may be accepted in place only
// at the generation of a read that found mangle PREROUTING holding the
// jump alone, in every family; a later rule there, a reload or an unknown
// generation (iptables-legacy) each say no.
func TestKeeperGrantPassGeneration(t *testing.T) {
	c := designConfig(t)
	v4, v6 := rulestest.New(), rulestest.New()
	k := rules.NewKeeper(v4, v6)
	var gen uint32 = 7
	k.SetGeneration(func() (uint32, error) { return gen, nil })
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	passes := func() bool {
		g, ok := k.GrantPassGeneration()
		return ok && g == gen
	}
	if passes() {
		t.Fatal("in place before any read of the tables")
	}
	k.Repair()
	if !passes() {
		t.Fatalf("not in place after a clean read at %d", gen)
	}

	// An administrator's later rule in IPv6's PREROUTING: a repeat would
	// meet it, so grants go through the chain again in both families.
	later := []string{"-p", "tcp", "--syn", "--dport", "2000", "-j", "DROP"}
	if err := v6.Append("mangle", "PREROUTING", later...); err != nil {
		t.Fatal(err)
	}
	gen++
	if g, ok := k.GrantPassGeneration(); ok && g == gen {
		t.Fatal("the old read vouches for the new generation")
	}
	if found := k.Repair(); len(found) != 0 {
		t.Fatalf("a later rule is no finding, got %+v", found)
	}
	if passes() {
		t.Error("in place with a rule after the jump")
	}
	if err := v6.Delete("mangle", "PREROUTING", later...); err != nil {
		t.Fatal(err)
	}
	gen++
	k.Repair()
	if !passes() {
		t.Error("not in place once the later rule is gone")
	}

	// A reload applies again: nothing is in place until the next read.
	if err := k.Apply(c); err != nil {
		t.Fatal(err)
	}
	if passes() {
		t.Error("in place after Apply, before a read")
	}

	// Without the generation (iptables-legacy) never.
	legacy := rules.NewKeeper(rulestest.New(), nil)
	if err := legacy.Apply(c); err != nil {
		t.Fatal(err)
	}
	legacy.Repair()
	if _, ok := legacy.GrantPassGeneration(); ok {
		t.Error("in place without a generation")
	}
}
