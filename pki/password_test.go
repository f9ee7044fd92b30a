package pki

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadPassword(t *testing.T) {
	const env = "SKNOCK_TEST_READ_PASSWORD"
	tests := []struct {
		name    string
		give    string // the password file's content; "-" for no file named
		setEnv  bool   // set the variable to env; else it is unset
		env     string
		want    string
		wantErr error
	}{
		{name: "first line", give: "secret\nignored\n", want: "secret"},
		{name: "no newline", give: "secret", want: "secret"},
		{name: "CRLF", give: "secret\r\n", want: "secret"},
		{name: "inner spaces kept", give: " se cret \n", want: " se cret "},
		{name: "file wins over env", give: "from-file\n", setEnv: true, env: "from-env", want: "from-file"},
		{name: "empty file", give: "", wantErr: ErrEmptyPassword},
		{name: "empty first line", give: "\nsecret\n", wantErr: ErrEmptyPassword},
		{name: "lone CR", give: "\r\n", wantErr: ErrEmptyPassword},
		{name: "env", give: "-", setEnv: true, env: "from-env", want: "from-env"},
		{name: "env set but empty", give: "-", setEnv: true, want: ""},
		{name: "env unset", give: "-", wantErr: ErrNoPassword},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setEnv {
				t.Setenv(env, tt.env)
			} else {
				t.Setenv(env, "")
				os.Unsetenv(env)
			}
			file := ""
			if tt.give != "-" {
				file = filepath.Join(t.TempDir(), "pass")
				if err := os.WriteFile(file, []byte(tt.give), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := ReadPassword(file, env)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadPassword: error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ReadPassword = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestReadPasswordErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	_, err := ReadPassword(missing, "")
	var pe *PasswordError
	if !errors.As(err, &pe) || pe.File != missing || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: got %#v, want a *PasswordError for %s wrapping fs.ErrNotExist", err, missing)
	}
	if want := "password file " + missing + ": open " + missing + ": no such file or directory"; err.Error() != want {
		t.Errorf("missing file: error %q, want %q", err, want)
	}

	_, err = ReadPassword("", "")
	if !errors.As(err, &pe) || !errors.Is(err, ErrNoPassword) || err.Error() != "no password" {
		t.Errorf("nothing named: got %v, want %v", err, ErrNoPassword)
	}
	_, err = ReadPassword("", "SKNOCK_TEST_SURELY_UNSET")
	if want := "environment variable SKNOCK_TEST_SURELY_UNSET: no password"; err == nil || err.Error() != want {
		t.Errorf("unset variable: error %v, want %q", err, want)
	}
}
