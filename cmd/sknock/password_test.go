package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestBundlePassword(t *testing.T) {
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
		{name: "env unset", wantErr: "no bundle password: give --password-file FILE or set SKNOCK_PASSWORD"},
		{name: "env empty", setEnv: true, wantErr: "no bundle password: give --password-file FILE or set SKNOCK_PASSWORD"},
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
