//go:build linux

package rules_test

import (
	"testing"

	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/rules"
)

// TestIntegrationGenerationReader: the reader, opened in a namespace,
// sees the generation of that namespace's nf_tables ruleset move with a
// rule iptables adds there, and stay while nothing changes.
func TestIntegrationGenerationReader(t *testing.T) {
	testenv.RequireRoot(t)
	ns := netns.New(t, "gen")
	var r *rules.GenerationReader
	if err := ns.Do(func() (err error) {
		r, err = rules.OpenGenerationReader()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	first, err := r.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if again, err := r.Generation(); err != nil || again != first {
		t.Fatalf("generation %d, then %d (%v) with nothing changed", first, again, err)
	}
	ns.MustRun("iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", "9", "-j", "ACCEPT")
	after, err := r.Generation()
	if err != nil {
		t.Fatal(err)
	}
	if after == first {
		t.Errorf("generation stayed %d after iptables added a rule (is iptables iptables-nft?)", first)
	}
}
