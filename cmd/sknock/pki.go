package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"sknock/pki"
)

// Exit codes of the pki subcommands.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// passwordEnv is the environment variable holding a bundle password when
// --password-file is not given.
const passwordEnv = "SKNOCK_PASSWORD"

const pkiUsage = `usage: sknock pki COMMAND [flags]

A small file-based CA for sknock. Commands:
  init     create the CA key and certificate in DIR
  server   issue the gatekeeper's certificate and bundle
  client   issue a client certificate and bundle with its authorised ports
  revoke   mark a certificate as revoked
  crl      write DIR/ca.crl listing every revoked certificate

Run "sknock pki COMMAND -h" for the flags of a command.

Example:
  sknock pki init --dir ./ca
  SKNOCK_PASSWORD=secret sknock pki server --dir ./ca --name gatekeeper
  SKNOCK_PASSWORD=secret sknock pki client --dir ./ca --name alice --allow tcp/22,udp/8000
  sknock pki revoke --dir ./ca --name alice && sknock pki crl --dir ./ca
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
		fmt.Fprintln(stderr, "sknock pki: missing command (want init, server, client, revoke or crl; see 'sknock pki -h')")
		return exitUsage
	}
	commands := map[string]func([]string, io.Writer) error{
		"init":   pkiInit,
		"server": pkiServer,
		"client": pkiClient,
		"revoke": pkiRevoke,
		"crl":    pkiCRL,
	}
	name := args[0]
	if name == "-h" || name == "--help" || name == "help" {
		fmt.Fprint(stdout, pkiUsage)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "sknock pki: unknown command %q (want init, server, client, revoke or crl)\n", name)
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
	fs := newFlagSet("init", `usage: sknock pki init --dir DIR [--days N]

Create a CA: a P-256 key in DIR/ca.key (mode 0600) and a self-signed
certificate in DIR/ca.pem. Refuses to overwrite an existing CA.

Example:
  sknock pki init --dir /etc/sknock/ca --days 3650

`, stdout)
	dir := fs.String("dir", "", "CA directory (created if missing)")
	days := fs.Int("days", pki.DefaultCADays, "validity of the CA certificate in days (1 to 36500)")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	if err := checkDays(*days); err != nil {
		return err
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
	fs := newFlagSet("revoke", `usage: sknock pki revoke --dir DIR --name NAME

Record the certificate issued as NAME as revoked. Run 'sknock pki crl'
afterwards to publish it in DIR/ca.crl.

Example:
  sknock pki revoke --dir /etc/sknock/ca --name alice

`, stdout)
	dir := fs.String("dir", "", "CA directory")
	name := fs.String("name", "", "name of the certificate to revoke")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	if *name == "" {
		return usagef("--name is required")
	}
	if err := pki.Revoke(*dir, *name); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s; run 'sknock pki crl --dir %s' to publish\n", *name, *dir)
	return nil
}

func pkiCRL(args []string, stdout io.Writer) error {
	fs := newFlagSet("crl", `usage: sknock pki crl --dir DIR [--days N]

Write DIR/ca.crl (DER), signed by the CA, listing every revoked certificate,
with the next CRL number; its nextUpdate is N days from now.

Example:
  sknock pki crl --dir /etc/sknock/ca --days 30

`, stdout)
	dir := fs.String("dir", "", "CA directory")
	days := fs.Int("days", pki.DefaultCRLDays, "days until the CRL's nextUpdate (1 to 36500)")
	if err := parseFlags(fs, args, dir); err != nil {
		return err
	}
	if err := checkDays(*days); err != nil {
		return err
	}
	if err := pki.WriteCRL(*dir, *days); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/%s\n", *dir, pki.CRLFile)
	return nil
}
