package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"sknock/internal/control"
)

const grantsUsage = `usage: sknock grants list [--json] [--socket PATH | --config FILE]
       sknock grants revoke (--source IP | --serial N | --all) [--json] [--socket PATH | --config FILE]

Talk to the running sknockd over its control socket (root only).

  list     the live grants: source, protocol/port, the certificate that
           earned each (subject and serial) and the seconds it has left
  revoke   end grants now, by source address, by certificate serial
           (decimal, or hex with 0x) or all of them; the connections they
           let in end too (with gate.revoke_mark set, as for a revoked
           certificate). It ends grants, not certificates: the client may
           knock again. To refuse a certificate for good, revoke it in
           the CRL (sknock pki revoke, sknock pki crl).

` + controlFlagsHelp + `
  --json          print the answer as JSON

Exit status: 0 done, 1 sknockd unreachable or refused, 2 bad flags.
`

// controlTimeout bounds one request to sknockd.
const controlTimeout = 10 * time.Second

func runGrants(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, grantsUsage)
		return 2
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "-help" {
		fmt.Fprint(stdout, grantsUsage)
		return 0
	}
	sub := args[0]
	fs := flag.NewFlagSet("grants "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(helpOut(args, stdout, stderr), grantsUsage) }
	var target controlFlags
	target.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	var req control.Request
	switch sub {
	case "list":
		req.Command = control.CommandGrants
	case "revoke":
		req.Command = control.CommandRevoke
		fs.StringVar(&req.Source, "source", "", "end the grants of this source address")
		fs.StringVar(&req.Serial, "serial", "", "end the grants of this certificate serial")
		fs.BoolVar(&req.All, "all", false, "end every grant")
	default:
		fmt.Fprintf(stderr, "sknock grants: unknown subcommand %q (want list or revoke)\n", sub)
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sknock grants %s: unexpected argument %q\n", sub, fs.Arg(0))
		return 2
	}
	if sub == "revoke" && countSet(req.Source != "", req.Serial != "", req.All) != 1 {
		fmt.Fprintln(stderr, "sknock grants revoke: give exactly one of --source, --serial or --all")
		return 2
	}
	resp, err := target.call(req, controlTimeout)
	if err != nil {
		fmt.Fprintf(stderr, "sknock grants %s: %v\n", sub, err)
		return 1
	}
	if *asJSON {
		return printJSON(stdout, stderr, resp)
	}
	if sub == "revoke" {
		fmt.Fprintf(stdout, "ended %d grant(s) and %d connection(s)\n", len(resp.Grants), resp.Connections)
		if len(resp.Grants) > 0 {
			printGrants(stdout, endedHeader, resp.Grants)
		}
		return 0
	}
	printGrants(stdout, liveHeader, resp.Grants)
	if resp.Live > len(resp.Grants) {
		fmt.Fprintf(stdout, "(%d of %d live grants shown)\n", len(resp.Grants), resp.Live)
	}
	return 0
}

// The tables' headers: live grants, and those a revoke just ended (their
// time left is what they had, not what they have).
const (
	liveHeader  = "SOURCE\tPORT\tSECONDS LEFT\tSERIAL\tSUBJECT"
	endedHeader = "ENDED: SOURCE\tPORT\tSECONDS IT HAD LEFT\tSERIAL\tSUBJECT"
)

// printGrants prints grants as a table under header, the soonest to end
// first.
func printGrants(w io.Writer, header string, grants []control.Grant) {
	if len(grants) == 0 {
		fmt.Fprintln(w, "no grants")
		return
	}
	slices.SortFunc(grants, func(a, b control.Grant) int { return a.Expires.Compare(b.Expires) })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, g := range grants {
		fmt.Fprintf(tw, "%s\t%s/%d\t%.0f\t%s\t%s\n", g.Source, g.Proto, g.Port, g.SecondsLeft, dash(g.Serial), dash(g.Subject))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "sknock: %v\n", err)
		return 1
	}
	return 0
}

func countSet(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// helpOut is stdout when help was asked for, stderr when it explains a
// bad flag.
func helpOut(args []string, stdout, stderr io.Writer) io.Writer {
	if slices.ContainsFunc(args, func(a string) bool { return strings.TrimLeft(a, "-") == "help" || a == "-h" }) {
		return stdout
	}
	return stderr
}
