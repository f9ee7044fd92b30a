package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeProfiles(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestProfileUnknownKeyIsNamed(t *testing.T) {
	path := writeProfiles(t, "hosts:\n  gate1:\n    pkcs12: me.pfx\n    colour: blue\n")
	_, err := parseKnockFlags([]string{"--profile-file", path, "gate1"}, io.Discard)
	want := fmt.Sprintf(`profiles %s: line 4: unknown key "colour"`, path)
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	got := runKnockForTest(nil, "knock", "--profile-file", path, "gate1")
	if got.code != 2 || !strings.Contains(got.stderr, `unknown key "colour"`) {
		t.Errorf("exit %d, stderr %q; want 2 and the key's name", got.code, got.stderr)
	}
}

func TestProfileBadValuesAreNamed(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"hosts:\n  g:\n    source_ip: nat\n", `hosts.g.source_ip: "nat" is not auto, local or an IP address`},
		{"hosts:\n  g:\n    family: ipv5\n", `hosts.g.family: "ipv5" is not ipv4, ipv6 or any`},
		{"hosts:\n  g:\n    key_cache: 2d\n", `hosts.g.key_cache: "2d" is not a duration between 0 and 24h0m0s`},
		{"hosts:\n  g:\n    knock_port: 70000\n", `hosts.g.knock_port: 70000 is not in 0..65535`},
		{"hosts:\n  g:\n    protocol: 3\n", `hosts.g.protocol: 3 is not 1 or 2`},
		{"hosts:\n  g:\n    password_file: a\n    password_env: B\n", `hosts.g.password_env: give password_file or password_env, not both`},
		{"stun: 3\n", `cannot unmarshal`},
	}
	for _, tt := range tests {
		path := writeProfiles(t, tt.yaml)
		_, err := parseKnockFlags([]string{"--profile-file", path, "g", "tcp/22"}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.yaml, err, tt.want)
		}
	}
}

func TestProfileFillsAndFlagsOverride(t *testing.T) {
	path := writeProfiles(t, `stun: [stun.example:3478]
hosts:
  gate1:
    address: 198.18.0.1
    pkcs12: keys/me.pfx
    server_cert: ~/gate1.pem
    password_env: GATE1_PASSWORD
    key_cache: 1h
    source_ip: auto
    knock_port: 40000
    ports: [tcp/22, udp/8000]
    family: ipv4
    protocol: 1
`)
	dir := filepath.Dir(path)
	home, _ := os.UserHomeDir()
	f, err := parseKnockFlags([]string{"--profile-file", path, "gate1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.host != "198.18.0.1" || f.bundle != filepath.Join(dir, "keys/me.pfx") || f.serverCert != filepath.Join(home, "gate1.pem") ||
		f.passwordEnv != "GATE1_PASSWORD" || f.keyCache != time.Hour || f.sourceIP != "auto" || f.knockPort != 40000 ||
		len(f.reqs) != 2 || f.reqs[0].String() != "tcp/22" || !f.ipv4 || len(f.stun) != 1 || f.protocol != 1 {
		t.Errorf("from the profile: %+v", f)
	}
	// Flags win; ports on the command line replace the profile's; the
	// ProxyCommand's %h may be the address rather than the name.
	f, err = parseKnockFlags([]string{"--profile-file", path, "--pkcs12", "other.pfx", "--knock-port", "41000", "-6", "--source-ip", "local", "--stun", "s2:3478", "--protocol", "2", "198.18.0.1", "tcp/2000,udp/8000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.bundle != "other.pfx" || f.knockPort != 41000 || f.ipv4 || !f.ipv6 || f.sourceIP != "local" ||
		len(f.reqs) != 2 || f.reqs[0].String() != "tcp/2000" || f.reqs[1].String() != "udp/8000" || f.serverCert != filepath.Join(home, "gate1.pem") || f.stun[0] != "s2:3478" || f.protocol != 2 {
		t.Errorf("flags over the profile: %+v", f)
	}
}

func TestProfileMissing(t *testing.T) {
	// An explicit file must exist; the default one may be missing.
	_, err := parseKnockFlags([]string{"--profile-file", filepath.Join(t.TempDir(), "none.yaml"), "gate1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Errorf("missing --profile-file: %v, want an error naming it", err)
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	_, err = parseKnockFlags([]string{"gate1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "PROTO/PORT") {
		t.Errorf("no profile, no ports: %v, want the usage error", err)
	}
}

// TestKnockFromDefaultProfile: with only a profile in $XDG_CONFIG_HOME,
// "sknock knock gate1" knocks the profile's ports with its files.
func TestKnockFromDefaultProfile(t *testing.T) {
	p := newKnockPKI(t)
	listener, port := knockListener(t)
	config := t.TempDir()
	if err := os.MkdirAll(filepath.Join(config, "sknock"), 0o700); err != nil {
		t.Fatal(err)
	}
	profiles := fmt.Sprintf("hosts:\n  gate1:\n    address: 127.0.0.1\n    pkcs12: %s\n    server_cert: %s\n    password_env: GATE1_PW\n    knock_port: %s\n    ports: [udp/8000]\n",
		p.clientPFX, p.serverCert, port)
	if err := os.WriteFile(filepath.Join(config, "sknock", "config.yaml"), []byte(profiles), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", config)
	t.Setenv("GATE1_PW", "portknocking")
	t.Setenv(passwordEnv, "")
	got := runKnockForTest(nil, "knock", "gate1")
	if got.code != 0 || strings.TrimSpace(got.stdout) != "udp/8000 knocked (UDP cannot be verified)" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and udp/8000 knocked", got.code, got.stdout, got.stderr)
	}
	listener.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := listener.ReadFromUDP(make([]byte, 2048)); err != nil {
		t.Errorf("no knock arrived on the profile's knock port: %v", err)
	}
}
