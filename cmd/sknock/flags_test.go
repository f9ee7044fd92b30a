package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPKIDaysBounds: every --days of sknock pki outside 1..36500 is a
// usage error naming the flag and the range, and writes nothing; before
// the bound, init --days 1000000 wrapped around to a CA that expired in
// 1842 and exited 0.
func TestPKIDaysBounds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if got := runPKIForTest("init", "--dir", dir); got.code != 0 {
		t.Fatalf("init: exit %d, stderr %q", got.code, got.stderr)
	}
	t.Setenv(passwordEnv, "pw")
	fresh := filepath.Join(t.TempDir(), "fresh")
	tests := []struct {
		name     string
		give     []string
		wantCode int
		want     string // in stderr
	}{
		{name: "init wraps", give: []string{"init", "--dir", fresh, "--days", "1000000"}, wantCode: 2, want: "--days 1000000 is not in 1..36500"},
		{name: "init above max", give: []string{"init", "--dir", fresh, "--days", "36501"}, wantCode: 2, want: "--days 36501 is not in 1..36500"},
		{name: "init zero", give: []string{"init", "--dir", fresh, "--days", "0"}, wantCode: 2, want: "--days 0 is not in 1..36500"},
		{name: "init beyond int64", give: []string{"init", "--dir", fresh, "--days", "99999999999999999999"}, wantCode: 2, want: "-days"},
		{name: "server wraps", give: []string{"server", "--dir", dir, "--name", "gatekeeper", "--days", "1000000"}, wantCode: 2, want: "--days 1000000 is not in 1..36500"},
		{name: "client wraps", give: []string{"client", "--dir", dir, "--name", "alice", "--allow", "tcp/22", "--days", "1000000"}, wantCode: 2, want: "--days 1000000 is not in 1..36500"},
		{name: "client negative", give: []string{"client", "--dir", dir, "--name", "alice", "--allow", "tcp/22", "--days", "-1"}, wantCode: 2, want: "--days -1 is not in 1..36500"},
		{name: "crl wraps", give: []string{"crl", "--dir", dir, "--days", "1000000"}, wantCode: 2, want: "--days 1000000 is not in 1..36500"},
		{name: "server at max", give: []string{"server", "--dir", dir, "--name", "maxed", "--days", "36500"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runPKIForTest(tt.give...)
			if got.code != tt.wantCode || !strings.Contains(got.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", got.code, got.stderr, tt.wantCode, tt.want)
			}
		})
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused init touched %s: %v", fresh, err)
	}
	for _, name := range []string{"gatekeeper.pem", "alice.pem"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a refused issue wrote %s", name)
		}
	}
}

// TestKnockNumericFlagBounds: --knock-port, --retries and --timeout out of
// range are usage errors naming the flag; their bounds are accepted.
func TestKnockNumericFlagBounds(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string // in the error; empty: accepted
	}{
		{name: "knock port max", give: []string{"--knock-port", "65535"}},
		{name: "knock port wraps", give: []string{"--knock-port", "65536"}, want: "--knock-port 65536"},
		{name: "knock port negative", give: []string{"--knock-port", "-1"}, want: "--knock-port -1"},
		{name: "knock port beyond int64", give: []string{"--knock-port", "18446744073709551617"}, want: "-knock-port"},
		{name: "retries max", give: []string{"--retries", "100"}},
		{name: "retries above max", give: []string{"--retries", "101"}, want: "--retries 101 is not in 0..100"},
		{name: "retries max int", give: []string{"--retries", "9223372036854775807"}, want: "--retries"},
		{name: "retries negative", give: []string{"--retries", "-1"}, want: "--retries -1"},
		{name: "timeout max", give: []string{"--timeout", "10m"}},
		{name: "timeout above max", give: []string{"--timeout", "10m1s"}, want: "--timeout"},
		{name: "timeout max duration", give: []string{"--timeout", "2562047h"}, want: "--timeout"},
		{name: "timeout beyond duration", give: []string{"--timeout", "9999999h"}, want: "-timeout"},
		{name: "timeout zero", give: []string{"--timeout", "0"}, want: "--timeout"},
		{name: "protocol 1", give: []string{"--protocol", "1"}},
		{name: "protocol 2", give: []string{"--protocol", "2"}},
		{name: "protocol 3", give: []string{"--protocol", "3"}, want: "--protocol 3 is not 1 or 2"},
		{name: "protocol 0", give: []string{"--protocol", "0"}, want: "--protocol 0 is not 1 or 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--pkcs12", "a.pfx", "--server-cert", "s.pem"}, tt.give...)
			_, err := parseKnockFlags(append(args, "host", "tcp/22"), io.Discard)
			var usage usageError
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tt.want != "" && (!errors.As(err, &usage) || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want a usage error containing %q", err, tt.want)
			}
		})
	}
}

// TestInspectNumericFlagBounds: --at outside the 32-bit Unix seconds a
// knock carries, and --tolerance outside sknockd's range, are usage errors
// (exit 2) naming the flag.
func TestInspectNumericFlagBounds(t *testing.T) {
	tests := []struct {
		name string
		give []string
		want string
	}{
		{name: "at negative", give: []string{"--at", "-1"}, want: "--at"},
		{name: "at beyond 32 bits", give: []string{"--at", "4294967296"}, want: "--at"},
		{name: "at max int64", give: []string{"--at", "9223372036854775807"}, want: "--at"},
		{name: "tolerance negative", give: []string{"--tolerance", "-7s"}, want: "--tolerance"},
		{name: "tolerance zero", give: []string{"--tolerance", "0"}, want: "--tolerance"},
		{name: "tolerance above sknockd's", give: []string{"--tolerance", "11m"}, want: "--tolerance"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(passwordEnv, "portknocking")
			args := append([]string{"inspect", "--pkcs12", vector(t, "server.pfx")}, tt.give...)
			var out, errOut strings.Builder
			code := run(append(args, vector(t, "knock-a-tcp2000-v4.bin")), nil, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, errOut.String(), tt.want)
			}
		})
	}
}
