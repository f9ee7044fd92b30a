package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"sknock/internal/control"
)

const statusUsage = `usage: sknock status [--json] [--socket PATH | --config FILE]

Show the running sknockd's state over its control socket (root only):
version, uptime, configuration file, whether the rule set is whole, the
trust state and CRL freshness, the last reload and the counters.

` + controlFlagsHelp + `
  --json          print the answer as JSON

Exit status: 0 sknockd answered and its rules are whole; 1 unreachable or
refused; 3 it answered but its rule set is damaged or its CRL stale.
`

func runStatus(args []string, stdout, stderr io.Writer) int {
	target, asJSON, done := parseControlCommand("status", statusUsage, args, stdout, stderr)
	if done >= 0 {
		return done
	}
	resp, err := target.call(control.Request{Command: control.CommandStatus}, controlTimeout)
	if err == nil && resp.Status == nil {
		err = errors.New("sknockd sent no status")
	}
	if err != nil {
		fmt.Fprintf(stderr, "sknock status: %v\n", err)
		return 1
	}
	st := resp.Status
	code := 0
	if !st.RulesHealthy || st.Trust.CRLStale {
		code = 3
	}
	if asJSON {
		if c := printJSON(stdout, stderr, st); c != 0 {
			return c
		}
		return code
	}
	printStatus(stdout, st)
	return code
}

func printStatus(w io.Writer, st *control.Status) {
	rules := "whole"
	if !st.RulesHealthy {
		rules = "DAMAGED (sknockd retries every second; see its log)"
	}
	fmt.Fprintf(w, "sknockd %s, up %s (since %s)\n", st.Version, time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second), st.Started.Format(time.RFC3339))
	fmt.Fprintf(w, "config:   %s\n", st.Config)
	fmt.Fprintf(w, "rules:    %s\n", rules)
	fmt.Fprintf(w, "protect:  %s (policy %s)\n", st.Protect, st.Policy)
	fmt.Fprintf(w, "grants:   %d live\n", st.Grants)
	switch r := st.LastReload; {
	case r == nil:
		fmt.Fprintln(w, "reload:   none since the start")
	case r.Error != "":
		fmt.Fprintf(w, "reload:   REFUSED at %s (%s), previous configuration in force: %s\n", r.Time.Format(time.RFC3339), r.Trigger, r.Error)
	default:
		fmt.Fprintf(w, "reload:   applied at %s (%s), changed: %s\n", r.Time.Format(time.RFC3339), r.Trigger, changedList(r.Changed))
	}
	t := st.Trust
	switch {
	case !t.CRL:
		fmt.Fprintln(w, "crl:      none (revocation is off)")
	default:
		fresh := "fresh"
		if t.CRLStale {
			fresh = "STALE: past its next update"
		}
		next := "none"
		if !t.CRLNextUpdate.IsZero() {
			next = t.CRLNextUpdate.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "crl:      %s, %d revoked, issued %s, next update %s, by %s\n", fresh, t.CRLRevoked, t.CRLThisUpdate.Format(time.RFC3339), next, t.CRLIssuer)
	}
	for _, c := range t.CRLs {
		fmt.Fprintf(w, "          %s: %d revoked, issued %s, next update %s, by %s\n", c.File, c.Revoked, c.ThisUpdate.Format(time.RFC3339), c.NextUpdate.Format(time.RFC3339), c.Issuer)
	}
	if t.Server != "" {
		fmt.Fprintf(w, "server:   %s, valid until %s\n", t.Server, t.ServerNotAfter.Format(time.RFC3339))
	}
	for _, ca := range t.CAs {
		fmt.Fprintf(w, "ca:       %s\n", ca)
	}
	fmt.Fprintf(w, "knocks:   timestamp tolerance %gs\n", t.ToleranceSecs)
	for _, warn := range t.Warnings {
		fmt.Fprintf(w, "WARNING:  %s: %s\n", warn.Check, warn.Text)
	}
	names := make([]string, 0, len(st.Counters))
	for name := range st.Counters {
		names = append(names, name)
	}
	slices.Sort(names)
	fmt.Fprintln(w, "counters:")
	for _, name := range names {
		fmt.Fprintf(w, "  %-24s %d\n", name, st.Counters[name])
	}
}
