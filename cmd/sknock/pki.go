package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"sknock/pki"
)

// Exit codes of the pki subcommands.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	// exitAlreadyOpen: sknock knock found a port open to this client's
	// address before its knock (another grant to a shared address), so
	// the knock's own verdict is unknown.
	exitAlreadyOpen = 3
)

// passwordEnv is the environment variable holding a bundle password when
// --password-file is not given.
const passwordEnv = "SKNOCK_PASSWORD"

const pkiUsage = `usage: sknock pki COMMAND [flags]

A small file-based CA for sknock. Commands:
  init     create the CA key and certificate in DIR (--parent: an intermediate CA)
  server   issue the gatekeeper's certificate and bundle
  client   issue a client certificate and bundle with its authorised ports
  renew    issue a new certificate and bundle for an existing name
  revoke   mark a certificate as revoked
  crl      write DIR/ca.crl listing every revoked certificate (--show: its dates)
  list     every certificate: name, serial, authorisation, expiry, revoked

Run "sknock pki COMMAND -h" for the flags of a command.

Example:
  sknock pki init --dir ./ca
  SKNOCK_PASSWORD=secret sknock pki server --dir ./ca --name gatekeeper
  SKNOCK_PASSWORD=secret sknock pki client --dir ./ca --name alice --allow tcp/22,udp/8000
  sknock pki revoke --dir ./ca --name alice && sknock pki crl --dir ./ca
  SKNOCK_PASSWORD=secret sknock pki renew --dir ./ca --name bob
  sknock pki list --dir ./ca
`

// usageError marks a command-line or configuration mistake (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// runPKI runs "sknock pki ARGS..." and returns the exit code: 0 on success,
// 2 for a usage or configuration error, 1 for any other failure. Errors are
// one line on stderr starting with "sknock pki: ".
func runPKI(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "sknock pki: missing command (want init, server, client, renew, revoke, crl or list; see 'sknock pki -h')")
		return exitUsage
	}
	commands := map[string]func([]string, io.Writer) error{
		"init":   pkiInit,
		"server": pkiServer,
		"client": pkiClient,
		"renew":  pkiRenew,
		"revoke": pkiRevoke,
		"crl":    pkiCRL,
		"list":   pkiList,
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, pkiUsage)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "sknock pki: unknown command %q (want init, server, client, renew, revoke, crl or list)\n", name)
		return exitUsage
	}
	err := cmd(args[1:], stdout)
	var usage usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &usage):
		fmt.Fprintf(stderr, "sknock pki: %s: %s (see 'sknock pki %s -h')\n", name, oneLine(err.Error()), name)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "sknock pki: %s\n", oneLine(err.Error()))
		return exitFailure
	}
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// commandFlags is a subcommand's FlagSet that prints nothing by itself:
// -h prints the usage text and the flags to stdout, and a bad flag becomes
// one error line.
type commandFlags struct {
	*flag.FlagSet
	usage  string
	stdout io.Writer
}

func newFlagSet(name, usage string, stdout io.Writer) *commandFlags {
	fs := flag.NewFlagSet("sknock pki "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // flag calls it on every parse error too
	return &commandFlags{FlagSet: fs, usage: usage, stdout: stdout}
}

func (fs *commandFlags) printHelp() {
	fmt.Fprint(fs.stdout, fs.usage)
	fs.SetOutput(fs.stdout)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parseFlags parses args and refuses positional arguments and a missing
// --dir (every command has one).
func parseFlags(fs *commandFlags, args []string, dir *string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printHelp()
			return err
		}
		return usageError{msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *dir == "" {
		return usagef("--dir is required")
	}
	return nil
}

func pkiInit(args []string, stdout io.Writer) error {
	fs := newFlagSet("init", `usage: sknock pki init --dir DIR [--days N] [--parent PARENTDIR --name NAME]

Create a CA: a P-256 key in DIR/ca.key (mode 0600) and a self-signed
certificate in DIR/ca.pem. Refuses to overwrite an existing CA.

With --parent, create an intermediate CA issued by the CA in PARENTDIR
instead: DIR/ca.pem holds its certificate followed by the parent's (name
that file in the gatekeeper's server.ca), and PARENTDIR's index records it
as NAME, so 'sknock pki revoke --dir PARENTDIR --name NAME' and a new CRL
of the parent revoke it and every certificate it issued.

Example:
  sknock pki init --dir /etc/sknock/ca --days 3650
  sknock pki init --dir /etc/sknock/ca-ops --parent /etc/sknock/ca --name ops

`, stdout)
	dir := fs.String("dir", "", "CA directory (created if missing)")
	days := fs.Int("days", pki.DefaultCADays, "validity of the CA certificate in days (1 to 36500)")
	parent := fs.String("parent", "", "make an intermediate CA issued by the CA in this directory")
	name := fs.String("name", "", "the intermediate's name in the parent's index (with --parent)")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	if err := checkDays(*days); err != nil {
		return err
	}
	switch {
	case *parent == "" && *name != "":
		return usagef("--name is for an intermediate CA: give --parent too")
	case *parent != "" && *name == "":
		return usagef("--name is required with --parent (the intermediate's name in the parent's index)")
	case *parent != "":
		if err := pki.ValidateName(*name); err != nil {
			return usageError{msg: err.Error()}
		}
		if err := pki.InitIntermediate(*dir, *parent, *name, *days); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s/%s and %s/%s (intermediate CA %s under %s; its chain is %s/%s)\n", *dir, pki.CAKeyFile, *dir, pki.CACertFile, *name, *parent, *dir, pki.CACertFile)
		return nil
	}
	if err := pki.InitCA(*dir, *days); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/%s and %s/%s\n", *dir, pki.CAKeyFile, *dir, pki.CACertFile)
	return nil
}

// checkDays refuses a --days outside 1..pki.MaxDays, beyond which the end
// of the validity would overflow.
func checkDays(days int) error {
	if days < 1 || days > pki.MaxDays {
		return usagef("--days %d is not in 1..%d", days, pki.MaxDays)
	}
	return nil
}

// issueFlags are the flags server and client share.
type issueFlags struct {
	dir, name, passwordFile string
	days                    int
	legacy                  bool
}

func (f *issueFlags) register(fs *commandFlags) {
	fs.StringVar(&f.dir, "dir", "", "CA directory made by 'sknock pki init'")
	fs.StringVar(&f.name, "name", "", "certificate name: CN, and the files DIR/NAME.pfx and DIR/NAME.pem")
	fs.IntVar(&f.days, "days", pki.DefaultCertDays, "validity in days, 1 to 36500 (cut to the CA's)")
	fs.BoolVar(&f.legacy, "legacy", false, "write the bundle with RC2-40/3DES/SHA-1 for old OpenSSL and the original sKnock clients")
	fs.StringVar(&f.passwordFile, "password-file", "", "file whose first line is the bundle password (default: $"+passwordEnv+")")
}

// check validates the shared flags and returns the bundle password.
func (f *issueFlags) check() (string, error) {
	if f.name == "" {
		return "", usagef("--name is required")
	}
	if err := pki.ValidateName(f.name); err != nil {
		return "", usageError{msg: err.Error()}
	}
	if err := checkDays(f.days); err != nil {
		return "", err
	}
	return bundlePassword(f.passwordFile)
}

// bundlePassword reads the password from file (its first line) or from
// $SKNOCK_PASSWORD, which counts as unset when empty. Every failure is a
// usageError.
func bundlePassword(file string) (string, error) {
	pw, err := pki.ReadPassword(file, passwordEnv)
	var pe *pki.PasswordError
	switch {
	case err == nil && pw != "":
		return pw, nil
	case err == nil, errors.Is(err, pki.ErrNoPassword):
		return "", usagef("no bundle password: give --password-file FILE or set %s", passwordEnv)
	case errors.Is(err, pki.ErrEmptyPassword):
		return "", usagef("--password-file %s: empty password", file)
	case errors.As(err, &pe):
		return "", usagef("read --password-file: %v", pe.Err)
	}
	return "", usageError{msg: err.Error()}
}

func pkiServer(args []string, stdout io.Writer) error {
	fs := newFlagSet("server", `usage: sknock pki server --dir DIR --name NAME [--days N] [--legacy] [--password-file FILE]

Issue the gatekeeper's certificate and write DIR/NAME.pfx (key, certificate
and CA certificate; mode 0600) and DIR/NAME.pem. The bundle password comes
from --password-file or $SKNOCK_PASSWORD.

Example:
  SKNOCK_PASSWORD=secret sknock pki server --dir /etc/sknock/ca --name gatekeeper

`, stdout)
	var f issueFlags
	f.register(fs)
	if err := parseFlags(fs, args, &f.dir); err != nil {
		return err
	}
	password, err := f.check()
	if err != nil {
		return err
	}
	if err := pki.IssueServer(f.dir, f.name, password, pki.IssueOptions{Days: f.days, Legacy: f.legacy}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/%s.pfx and %s/%s.pem\n", f.dir, f.name, f.dir, f.name)
	return nil
}

func pkiClient(args []string, stdout io.Writer) error {
	fs := newFlagSet("client", `usage: sknock pki client --dir DIR --name NAME --allow PROTO/PORT,... [--days N] [--legacy] [--password-file FILE]

Issue a client certificate authorised for the listed ports and write
DIR/NAME.pfx (mode 0600) and DIR/NAME.pem. The bundle password comes from
--password-file or $SKNOCK_PASSWORD.

Example:
  SKNOCK_PASSWORD=secret sknock pki client --dir /etc/sknock/ca --name alice --allow tcp/2000,udp/8000

`, stdout)
	var f issueFlags
	f.register(fs)
	allowText := fs.String("allow", "", "ports the certificate may open, e.g. tcp/22,udp/8000 (required)")
	if err := parseFlags(fs, args, &f.dir); err != nil {
		return err
	}
	if *allowText == "" {
		return usagef("--allow is required (e.g. --allow tcp/22,udp/8000)")
	}
	allow, err := pki.ParseAllow(*allowText)
	if err != nil {
		return usagef("--allow: %v", err)
	}
	password, err := f.check()
	if err != nil {
		return err
	}
	if err := pki.IssueClient(f.dir, f.name, allow, password, pki.IssueOptions{Days: f.days, Legacy: f.legacy}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/%s.pfx and %s/%s.pem allowing %s\n", f.dir, f.name, f.dir, f.name, allow.CLIString())
	return nil
}

func pkiRevoke(args []string, stdout io.Writer) error {
	fs := newFlagSet("revoke", `usage: sknock pki revoke --dir DIR --name NAME [--serial SERIAL]

Record the certificate issued as NAME (its current one, or the one with
--serial, e.g. a renewed one: see 'sknock pki list') as revoked. Run
'sknock pki crl' afterwards to publish it in DIR/ca.crl. The name can
then be issued again with 'sknock pki client' or 'sknock pki server'.

Example:
  sknock pki revoke --dir /etc/sknock/ca --name alice

`, stdout)
	dir := fs.String("dir", "", "CA directory")
	name := fs.String("name", "", "name of the certificate to revoke")
	serial := fs.String("serial", "", "the serial (decimal) of an older certificate of NAME")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	var err error
	if *serial != "" {
		err = pki.RevokeSerial(*dir, *name, *serial)
	} else {
		err = pki.Revoke(*dir, *name)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s; run 'sknock pki crl --dir %s' to publish\n", *name, *dir)
	return nil
}

func pkiCRL(args []string, stdout io.Writer) error {
	fs := newFlagSet("crl", `usage: sknock pki crl --dir DIR [--days N | --until DATE] | --show

Write DIR/ca.crl (DER), signed by the CA, listing every revoked certificate,
with the next CRL number; its nextUpdate is N days from now, or DATE
(YYYY-MM-DD, or RFC 3339). Gatekeepers warn as the nextUpdate nears, and
after it keep the CRL with a warning (or refuse every knock, with
crl.stale: refuse): re-sign it on a schedule well within --days. --show
prints the current CRL's dates, number and count instead.

Example:
  sknock pki crl --dir /etc/sknock/ca --days 30
  sknock pki crl --dir /etc/sknock/ca --show

`, stdout)
	dir := fs.String("dir", "", "CA directory")
	days := fs.Int("days", pki.DefaultCRLDays, "days until the CRL's nextUpdate (1 to 36500)")
	until := fs.String("until", "", "the CRL's nextUpdate, YYYY-MM-DD (midnight UTC) or RFC 3339")
	show := fs.Bool("show", false, "print the current CRL's this/next update, number and count")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	daysSet := false
	fs.Visit(func(f *flag.Flag) { daysSet = daysSet || f.Name == "days" })
	switch {
	case *show && (daysSet || *until != ""):
		return usagef("--show writes nothing: not with --days or --until")
	case daysSet && *until != "":
		return usagef("give --days or --until, not both")
	case *show:
		st, err := pki.ReadCRLStatus(*dir)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s/%s: number %v, this update %s, next update %s (%s), %d revoked\n", *dir, pki.CRLFile,
			st.Number, st.ThisUpdate.UTC().Format(time.RFC3339), st.NextUpdate.UTC().Format(time.RFC3339), untilText(st.NextUpdate), st.Revoked)
		return nil
	case *until != "":
		next, err := parseUntil(*until)
		if err != nil {
			return err
		}
		if err := pki.WriteCRLUntil(*dir, next); err != nil {
			return err
		}
	default:
		if err := checkDays(*days); err != nil {
			return err
		}
		if err := pki.WriteCRL(*dir, *days); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "wrote %s/%s\n", *dir, pki.CRLFile)
	return nil
}

// parseUntil reads --until: a date (midnight UTC) or an RFC 3339 time.
func parseUntil(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("--until %q: want YYYY-MM-DD or RFC 3339 (2027-01-31T12:00:00Z)", s)
}

// untilText says how far t is from now, in days.
func untilText(t time.Time) string {
	left := time.Until(t)
	switch {
	case left < 0:
		return fmt.Sprintf("PAST, %d days ago", int(-left.Hours()/24))
	case left < 48*time.Hour:
		return "in " + left.Round(time.Minute).String()
	}
	return fmt.Sprintf("in %d days", int(left.Hours()/24))
}

func pkiRenew(args []string, stdout io.Writer) error {
	fs := newFlagSet("renew", `usage: sknock pki renew --dir DIR --name NAME [--days N] [--allow PROTO/PORT,...] [--keep-key] [--revoke-old] [--legacy] [--password-file FILE]

Issue a new certificate and bundle for NAME's current certificate, server
or client: same authorisation unless --allow is given, a new key unless
--keep-key. The old files are kept as DIR/NAME.OLDSERIAL.pfx and .pem; the
new ones are DIR/NAME.pfx and DIR/NAME.pem. The old certificate stays
valid until it expires, unless --revoke-old (then publish with 'sknock pki
crl'). The bundle password comes from --password-file or $SKNOCK_PASSWORD
(with --keep-key, it must also open the old bundle).

For the gatekeeper's own certificate use --keep-key: clients encrypt
their knocks to its key, so a new key locks out every client still holding
the old certificate.

Example:
  SKNOCK_PASSWORD=secret sknock pki renew --dir /etc/sknock/ca --name alice --days 365
  SKNOCK_PASSWORD=secret sknock pki renew --dir /etc/sknock/ca --name gatekeeper --keep-key

`, stdout)
	var f issueFlags
	f.register(fs)
	allowText := fs.String("allow", "", "new authorised ports, e.g. tcp/22,udp/8000 (default: the old certificate's)")
	keepKey := fs.Bool("keep-key", false, "certify the old key again (the gatekeeper's certificate)")
	revokeOld := fs.Bool("revoke-old", false, "revoke the old certificate (a lost or stolen key)")
	if err := parseFlags(fs, args, &f.dir); err != nil {
		return err
	}
	opts := pki.RenewOptions{IssueOptions: pki.IssueOptions{Days: f.days, Legacy: f.legacy}, KeepKey: *keepKey, RevokeOld: *revokeOld}
	if *allowText != "" {
		allow, err := pki.ParseAllow(*allowText)
		if err != nil {
			return usagef("--allow: %v", err)
		}
		opts.Allow, opts.SetAllow = allow, true
	}
	if *keepKey && *revokeOld {
		return usagef("--keep-key and --revoke-old exclude each other: a key being revoked must not be certified again")
	}
	password, err := f.check()
	if err != nil {
		return err
	}
	r, err := pki.Renew(f.dir, f.name, password, opts)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "renewed %s %s: serial %s, valid until %s", r.Kind, f.name, r.NewSerial, r.NotAfter.Format(time.DateOnly))
	if r.Authorization != "" {
		fmt.Fprintf(stdout, ", allowing %s", r.Authorization)
	}
	fmt.Fprintf(stdout, "; wrote %s/%s.pfx and %s/%s.pem; the old serial %s is kept as %s", f.dir, f.name, f.dir, f.name, r.OldSerial, r.Archived)
	if *revokeOld {
		fmt.Fprintf(stdout, " and revoked: run 'sknock pki crl --dir %s' to publish", f.dir)
	}
	fmt.Fprintln(stdout)
	return nil
}

func pkiList(args []string, stdout io.Writer) error {
	fs := newFlagSet("list", `usage: sknock pki list --dir DIR [--json]

Print every certificate issued in DIR, oldest first: name, kind, serial,
expiry, whether it is revoked, whether it is the name's current one, and
a client's authorised ports.

Example:
  sknock pki list --dir /etc/sknock/ca

`, stdout)
	dir := fs.String("dir", "", "CA directory")
	asJSON := fs.Bool("json", false, "one JSON object per certificate")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	list, err := pki.List(*dir)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		for _, c := range list {
			if err := enc.Encode(c); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tKIND\tSERIAL\tNOT AFTER\tSTATUS\tAUTHORISATION")
	now := time.Now()
	for _, c := range list {
		status := "valid"
		switch {
		case c.Revoked:
			status = "revoked"
		case now.After(c.NotAfter):
			status = "expired"
		case !c.Current:
			status = "renewed"
		}
		authz := c.Authorization
		if authz == "" {
			authz = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Kind, c.Serial, c.NotAfter.UTC().Format(time.DateOnly), status, authz)
	}
	return w.Flush()
}
