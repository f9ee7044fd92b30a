package main

// What the commands share about flags and their errors: the exit codes,
// the usage error (exit 2), a subcommand's quiet FlagSet, and the bundle
// password's --password-file or $SKNOCK_PASSWORD.

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes of every sknock command.
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

// usageError marks a command-line or configuration mistake (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// oneLine puts an error on the one line a command prints.
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
