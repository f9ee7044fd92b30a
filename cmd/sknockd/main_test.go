package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/internal/testenv"
)

// withProtect adds the required gate.protect to a test config without a
// gate section.
func withProtect(config string) string { return config + "gate:\n  protect: [tcp/2000]\n" }

// TestCheckRefusesConfigWithoutProtect checks that sknockd --check (the
// operator's dry run) refuses a file without gate.protect, as the daemon
// would, before it reads any bundle.
func TestCheckRefusesConfigWithoutProtect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "noprotect.yaml")
	if err := os.WriteFile(path, []byte("gate:\n  policy: reject\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if code := run([]string{"--config", path, "--check"}, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2; stdout %q, stderr %q", code, out.String(), errOut.String())
	}
	if want := path + ":1: gate.protect: required"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr %q does not contain %q", errOut.String(), want)
	}
}
func TestCheckRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	abs := testenv.VectorsDir(t)
	pass := write("pass", "portknocking\n")
	wrong := write("wrong", "nope\n")
	tests := []struct {
		name string
		give string
		code int
		want string
	}{
		{"good", "server:\n  pkcs12: " + abs + "/server.pfx\n  password_file: " + pass + "\ncrl:\n  file: " + abs + "/ca.crl\n", 0, "is valid"},
		{"wrong password", "server:\n  pkcs12: " + abs + "/server.pfx\n  password_file: " + wrong + "\n", 2, "password"},
		{"missing bundle", "server:\n  pkcs12: " + dir + "/nope.pfx\n  password_file: " + pass + "\n", 2, "nope.pfx"},
		{"missing password file", "server:\n  pkcs12: " + abs + "/server.pfx\n  password_file: " + dir + "/nope\n", 2, "server.password_file"},
		{"unset env", "server:\n  pkcs12: " + abs + "/server.pfx\n  password_file: \"\"\n  password_env: SKNOCK_TEST_UNSET_VAR\n", 2, "SKNOCK_TEST_UNSET_VAR"},
		{"bad crl", "server:\n  pkcs12: " + abs + "/server.pfx\n  password_file: " + pass + "\ncrl:\n  file: " + pass + "\n", 2, "crl.file"},
		{"unknown key", "server:\n  pkcs12: " + abs + "/server.pfx\n  colour: blue\n", 2, "server.colour"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := write(strings.ReplaceAll(tt.name, " ", "_")+".yaml", withProtect(tt.give))
			var out, errOut strings.Builder
			code := run([]string{"--config", cfg, "--check"}, &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, errOut.String())
			}
			if got := out.String() + errOut.String(); !strings.Contains(got, tt.want) {
				t.Errorf("output %q does not contain %q", got, tt.want)
			}
		})
	}
}
