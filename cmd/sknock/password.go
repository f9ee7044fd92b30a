package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"

	"sknock/pki"
)

// passwordTerminal asks for a password where a person can answer.
type passwordTerminal interface {
	// Interactive reports whether a prompt can be answered: standard
	// input is a terminal.
	Interactive() bool
	// ReadPassword writes prompt and reads one line without echo.
	ReadPassword(prompt string) (string, error)
}

// terminal is where a bundle password is asked for when neither
// --password-file nor $SKNOCK_PASSWORD gives one. Tests replace it.
var terminal passwordTerminal = stdinTerminal{}

// stdinTerminal prompts on standard error and reads standard input
// without echo; never when standard input is not a terminal (an ssh
// ProxyCommand's is the connection, a script's a pipe).
type stdinTerminal struct{}

func (stdinTerminal) Interactive() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

func (stdinTerminal) ReadPassword(prompt string) (string, error) {
	fmt.Fprint(os.Stderr, prompt)
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	return string(b), err
}

// bundlePassword reads the password of an existing bundle from file (its
// first line) or from $SKNOCK_PASSWORD, which counts as unset when
// empty, else asks for it on the terminal. Every failure is a
// usageError.
func bundlePassword(file string) (string, error) {
	return password(file, false)
}

// newBundlePassword is bundlePassword for a bundle about to be written: a
// password typed on the terminal is asked for twice.
func newBundlePassword(file string) (string, error) {
	return password(file, true)
}

func password(file string, confirm bool) (string, error) {
	pw, err := pki.ReadPassword(file, passwordEnv)
	var pe *pki.PasswordError
	switch {
	case err == nil && pw != "":
		return pw, nil
	case err == nil, errors.Is(err, pki.ErrNoPassword):
		if terminal.Interactive() {
			return askPassword(confirm)
		}
		return "", usagef("no bundle password: give --password-file FILE or set %s (or run on a terminal to be asked)", passwordEnv)
	case errors.Is(err, pki.ErrEmptyPassword):
		return "", usagef("--password-file %s: empty password", file)
	case errors.As(err, &pe):
		return "", usagef("read --password-file: %v", pe.Err)
	}
	return "", usageError{msg: err.Error()}
}

// askPassword asks on the terminal, twice when confirm is set.
func askPassword(confirm bool) (string, error) {
	pw, err := terminal.ReadPassword("Bundle password: ")
	if err != nil {
		return "", usagef("read the password from the terminal: %v", err)
	}
	if pw == "" {
		return "", usagef("empty password")
	}
	if confirm {
		again, err := terminal.ReadPassword("Again: ")
		if err != nil {
			return "", usagef("read the password from the terminal: %v", err)
		}
		if again != pw {
			return "", usagef("the passwords differ")
		}
	}
	return pw, nil
}
