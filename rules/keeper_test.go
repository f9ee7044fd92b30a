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
	checkApplied(t, v4, c, false)
	checkApplied(t, v6, c, true)
	if got, ok := k.Config(); !ok || got.Chain != c.Chain {
		t.Errorf("Config() = %v, %v; want the applied config", got.Chain, ok)
	}

	// A kernel without IPv6 gets no ip6tables handle: IPv4 alone.
	only4 := rulestest.New()
	if err := rules.NewKeeper(only4, nil).Apply(c); err != nil {
		t.Fatal(err)
	}
	checkApplied(t, only4, c, false)
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
			t.Errorf("IPv4 chains (-want +got):\n%s", diff)
		}
		if got := v4.Rules("INPUT"); len(got) != 0 {
			t.Errorf("IPv4 INPUT = %q, want empty", got)
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
		checkApplied(t, v4, c, false)
		checkApplied(t, v6, c, true)
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
		checkApplied(t, v4, c, false)
	})
}

// TestKeeperRepair tampers with the applied rules the ways other tools do
// and checks that Repair names the damage and undoes it, leaving foreign
// rules in place.
func TestKeeperRepair(t *testing.T) {
	c := designConfig(t)
	tests := []struct {
		name   string
		tamper func(tab *rulestest.Table)
		want   string   // in the problem
		others []string // INPUT after the jump once repaired
	}{
		{
			name:   "jump deleted",
			tamper: func(tab *rulestest.Table) { tab.Delete("filter", "INPUT", "-j", "SKNOCK") },
			want:   "INPUT has no jump to SKNOCK",
		},
		{
			name:   "chain flushed",
			tamper: func(tab *rulestest.Table) { tab.ClearChain("filter", "SKNOCK") },
			want:   "flushed",
		},
		{
			name: "chain deleted",
			tamper: func(tab *rulestest.Table) {
				tab.Delete("filter", "INPUT", "-j", "SKNOCK")
				tab.ClearChain("filter", "SKNOCK")
				tab.DeleteChain("filter", "SKNOCK")
			},
			want: "chain SKNOCK is missing",
		},
		{
			name:   "one rule deleted",
			tamper: func(tab *rulestest.Table) { tab.DeleteById("filter", "SKNOCK", 6) },
			want:   "rule 6 of SKNOCK is missing",
		},
		{
			name:   "rule inserted",
			tamper: func(tab *rulestest.Table) { tab.Insert("filter", "SKNOCK", 2, "-j", "ACCEPT") },
			want:   "foreign rule at 2",
		},
		{
			name: "rule changed",
			tamper: func(tab *rulestest.Table) {
				tab.DeleteById("filter", "SKNOCK", 3)
				tab.Insert("filter", "SKNOCK", 3, "-p", "tcp", "-j", "ACCEPT")
			},
			want: "rule 3 of SKNOCK changed",
		},
		{
			name: "accept above the jump",
			tamper: func(tab *rulestest.Table) {
				tab.Insert("filter", "INPUT", 1, "-p", "tcp", "--dport", "2000", "-j", "ACCEPT")
			},
			want:   `at INPUT position 2, behind "-A INPUT -p tcp --dport 2000 -j ACCEPT"`,
			others: []string{"-p tcp --dport 2000 -j ACCEPT"},
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
			checkApplied(t, v6, c, true, tt.others...)
			checkApplied(t, v4, c, false)
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
	v4.ClearChain("filter", "SKNOCK")
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
	checkApplied(t, v4, c, false)
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
	reads := 0
	v4.SetFailOn(func(op, chain string, spec []string) error {
		if op == "Save" {
			reads++
		}
		return nil
	})
	k.Repair() // the first call after Apply reads
	if reads != 1 {
		t.Fatalf("first Repair read the tables %d times, want 1", reads)
	}

	// A change the generation does not show is found by the safety net.
	v4.Delete("filter", "INPUT", "-j", "SKNOCK")
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
	checkApplied(t, v4, c, false)

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
