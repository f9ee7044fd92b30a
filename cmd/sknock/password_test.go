package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeTerminal answers prompts from a list, and records them.
type fakeTerminal struct {
	interactive bool
	answers     []string
	prompts     []string
}

func (f *fakeTerminal) Interactive() bool { return f.interactive }

func (f *fakeTerminal) ReadPassword(prompt string) (string, error) {
	f.prompts = append(f.prompts, prompt)
	if len(f.answers) == 0 {
		return "", errors.New("no more answers")
	}
	a := f.answers[0]
	f.answers = f.answers[1:]
	return a, nil
}

// useTerminal replaces the terminal for one test.
func useTerminal(t *testing.T, f *fakeTerminal) {
	old := terminal
	terminal = f
	t.Cleanup(func() { terminal = old })
}

func TestBundlePassword(t *testing.T) {
	useTerminal(t, &fakeTerminal{})
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, crlf, empty := write("good", "secret\nsecond line\n"), write("crlf", "secret\r\n"), write("empty", "\nsecret\n")
	missing := filepath.Join(dir, "nope")
	tests := []struct {
		name    string
		give    string // --password-file
		setEnv  bool
		env     string // $SKNOCK_PASSWORD when setEnv
		want    string
		wantErr string // the whole message
	}{
		{name: "file", give: good, want: "secret"},
		{name: "file with CRLF", give: crlf, want: "secret"},
		{name: "file wins over env", give: good, setEnv: true, env: "from-env", want: "secret"},
		{name: "env", setEnv: true, env: "from-env", want: "from-env"},
		{name: "empty first line", give: empty, wantErr: "--password-file " + empty + ": empty password"},
		{name: "missing file", give: missing, setEnv: true, env: "from-env", wantErr: "read --password-file: open " + missing + ": no such file or directory"},
		{name: "env unset", wantErr: "no bundle password: give --password-file FILE or set SKNOCK_PASSWORD (or run on a terminal to be asked)"},
		{name: "env empty", setEnv: true, wantErr: "no bundle password: give --password-file FILE or set SKNOCK_PASSWORD (or run on a terminal to be asked)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(passwordEnv, tt.env)
			if !tt.setEnv {
				os.Unsetenv(passwordEnv)
			}
			got, err := bundlePassword(tt.give)
			if tt.wantErr != "" {
				var usage usageError
				if err == nil || err.Error() != tt.wantErr || !errors.As(err, &usage) {
					t.Fatalf("bundlePassword(%q) error = %v, want the usage error %q", tt.give, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("bundlePassword(%q) = %q, %v; want %q", tt.give, got, err, tt.want)
			}
		})
	}
}

// TestBundlePasswordPrompt: with neither a file nor the variable, the
// password is asked for on a terminal (twice for a new bundle), and never
// when standard input is not one (an ssh ProxyCommand's).
func TestBundlePasswordPrompt(t *testing.T) {
	tests := []struct {
		name        string
		interactive bool
		confirm     bool
		answers     []string
		want        string
		wantPrompts int
		wantErr     string
	}{
		{name: "not a terminal", answers: []string{"secret"}, wantErr: "no bundle password: give --password-file FILE or set SKNOCK_PASSWORD (or run on a terminal to be asked)"},
		{name: "asked once", interactive: true, answers: []string{"secret"}, want: "secret", wantPrompts: 1},
		{name: "new bundle asked twice", interactive: true, confirm: true, answers: []string{"secret", "secret"}, want: "secret", wantPrompts: 2},
		{name: "new bundle, answers differ", interactive: true, confirm: true, answers: []string{"secret", "secreT"}, wantPrompts: 2, wantErr: "the passwords differ"},
		{name: "empty answer", interactive: true, answers: []string{""}, wantPrompts: 1, wantErr: "empty password"},
		{name: "terminal fails", interactive: true, wantPrompts: 1, wantErr: "read the password from the terminal: no more answers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Unsetenv(passwordEnv)
			t.Setenv(passwordEnv, "")
			term := &fakeTerminal{interactive: tt.interactive, answers: tt.answers}
			useTerminal(t, term)
			ask := bundlePassword
			if tt.confirm {
				ask = newBundlePassword
			}
			got, err := ask("")
			if len(term.prompts) != tt.wantPrompts {
				t.Errorf("prompts %q, want %d", term.prompts, tt.wantPrompts)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}
