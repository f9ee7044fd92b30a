package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/internal/testenv"
)

// vector is the path of the interop vector file name (see
// testenv.VectorsDir: skipped when the vectors are absent).
func vector(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testenv.VectorsDir(t), name)
}

// inspectVector runs `sknock inspect` on a vector file, or on data when it
// is not nil, and returns the JSON object and exit status.
func inspectVector(t *testing.T, name string, data []byte, extra ...string) (map[string]any, int) {
	t.Helper()
	path := vector(t, name)
	if data != nil {
		path = filepath.Join(t.TempDir(), "knock.bin")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("SKNOCK_PASSWORD", "portknocking")
	args := append([]string{"--pkcs12", vector(t, "server.pfx"), "--ca", vector(t, "ca.pem"), "--crl", vector(t, "ca.crl")}, extra...)
	args = append(args, path)
	var out, errOut strings.Builder
	code := run(append([]string{"inspect"}, args...), nil, &out, &errOut)
	if code == 2 {
		t.Fatalf("inspect failed: %s", errOut.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
		t.Fatalf("output is not one JSON object: %q: %v", out.String(), err)
	}
	return got, code
}

func TestInspectVectors(t *testing.T) {
	tests := []struct {
		name   string
		give   string
		source string
		at     string
		want   map[string]any
	}{
		{"a tcp2000", "knock-a-tcp2000-v4.bin", "198.18.0.2", "1767225600", map[string]any{"verdict": "grant", "proto": "tcp", "port": 2000.0, "client_ip": "198.18.0.2", "serial": "17", "subject": "CN=client-a,O=Vector Test"}},
		{"a udp8000", "knock-a-udp8000-v4.bin", "198.18.0.2", "1767225600", map[string]any{"verdict": "grant", "proto": "udp", "port": 8000.0}},
		{"a tcp3000 v6", "knock-a-tcp3000-v6.bin", "fd00:5e::2", "1767225600", map[string]any{"verdict": "grant", "proto": "tcp", "port": 3000.0, "client_ip": "fd00:5e::2"}},
		{"b tcp22", "knock-b-tcp22-v4.bin", "198.18.0.3", "1767225600", map[string]any{"verdict": "grant", "port": 22.0, "serial": "18"}},
		{"b unauthorised", "knock-b-tcp2000-unauthorized.bin", "198.18.0.3", "1767225600", map[string]any{"verdict": "deny", "reason": "not_authorized"}},
		{"revoked", "knock-revoked-tcp2000.bin", "198.18.0.4", "1767225600", map[string]any{"verdict": "deny", "reason": "revoked", "serial": "19"}},
		{"no authorisation", "knock-noauth-tcp2000.bin", "198.18.0.5", "1767225600", map[string]any{"verdict": "deny", "reason": "not_authorized", "authorization": nil}},
		{"rogue", "knock-rogue-tcp2000.bin", "198.18.0.6", "1767225600", map[string]any{"verdict": "deny", "reason": "untrusted_certificate"}},
		{"source mismatch", "knock-a-tcp2000-v4.bin", "198.18.0.99", "1767225600", map[string]any{"verdict": "deny", "reason": "source_mismatch"}},
		{"stale", "knock-a-tcp2000-v4.bin", "198.18.0.2", "1767225608", map[string]any{"verdict": "deny", "reason": "stale_timestamp"}},
		{"future", "knock-a-tcp2000-v4.bin", "198.18.0.2", "1767225592", map[string]any{"verdict": "deny", "reason": "future_timestamp"}},
		{"default source is the embedded one", "knock-a-tcp2000-v4.bin", "", "1767225600", map[string]any{"verdict": "grant", "source": "198.18.0.2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			extra := []string{"--at", tt.at}
			if tt.source != "" {
				extra = append(extra, "--source", tt.source)
			}
			got, code := inspectVector(t, tt.give, nil, extra...)
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
				}
			}
			if wantCode := map[bool]int{true: 0, false: 1}[tt.want["verdict"] == "grant"]; code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
		})
	}
}

func TestInspectChangedBytesDenied(t *testing.T) {
	data, err := os.ReadFile(vector(t, "knock-a-tcp2000-v4.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// A sample of positions through the CLI; the library test covers all.
	for _, i := range []int{0, 1, 3, 4, 100, len(data) - 66, len(data) - 1} {
		mod := append([]byte(nil), data...)
		mod[i] ^= 0x04
		got, code := inspectVector(t, "", mod, "--at", "1767225600", "--source", "198.18.0.2")
		if got["verdict"] != "deny" || code != 1 {
			t.Errorf("byte %d changed: %v (exit %d)", i, got, code)
		}
	}
}

func TestInspectUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no file", []string{"--pkcs12", "x.pfx"}, "FILE"},
		{"no bundle", []string{"k.bin"}, "--pkcs12"},
		{"bad at", []string{"--pkcs12", "x", "--at", "soon", "k.bin"}, "--at"},
		{"missing packet", []string{"--pkcs12", vector(t, "server.pfx"), "/nonexistent/k.bin"}, "/nonexistent/k.bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("SKNOCK_PASSWORD", "portknocking")
			var out, errOut strings.Builder
			if code := run(append([]string{"inspect"}, tt.args...), nil, &out, &errOut); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("stderr %q does not mention %q", errOut.String(), tt.want)
			}
		})
	}
	t.Run("wrong password", func(t *testing.T) {
		t.Setenv("SKNOCK_PASSWORD", "nope")
		var out, errOut strings.Builder
		code := run([]string{"inspect", "--pkcs12", vector(t, "server.pfx"), vector(t, "knock-a-tcp2000-v4.bin")}, nil, &out, &errOut)
		if code != 2 || !strings.Contains(errOut.String(), "password") {
			t.Errorf("exit %d, stderr %q; want 2 and a word about the password", code, errOut.String())
		}
	})
}

func TestInspectV2Vectors(t *testing.T) {
	tests := []struct {
		name string
		give string
		want map[string]any
	}{
		{"a multi", "knock2-a-multi-v4.bin", map[string]any{"verdict": "grant", "protocol": 2.0, "client_ip": "198.18.0.2", "serial": "17", "timestamp_ms": 1796083200000.0}},
		{"a tcp3000 v6", "knock2-a-tcp3000-v6.bin", map[string]any{"verdict": "grant", "proto": "tcp", "port": 3000.0, "client_ip": "fd00:5e::2"}},
		{"partly unauthorised", "knock2-a-partly-unauthorized.bin", map[string]any{"verdict": "deny", "reason": "not_authorized"}},
		{"behind 7.001 s", "knock2-a-ts-behind7001.bin", map[string]any{"verdict": "deny", "reason": "stale_timestamp"}},
		{"revoked", "knock2-revoked-tcp2000.bin", map[string]any{"verdict": "deny", "reason": "revoked", "serial": "19"}},
		{"rogue", "knock2-rogue-tcp2000.bin", map[string]any{"verdict": "deny", "reason": "untrusted_certificate"}},
		{"bad mac1", "knock2-a-badmac.bin", map[string]any{"verdict": "deny", "reason": "bad_mac1", "protocol": 2.0}},
		{"other server", "knock2-a-otherserver.bin", map[string]any{"verdict": "deny", "reason": "bad_mac1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := inspectVector(t, "v2/"+tt.give, nil, "--at", "1796083200")
			for k, want := range tt.want {
				if got[k] != want {
					t.Errorf("%s = %v, want %v (all: %v)", k, got[k], want, got)
				}
			}
			if wantCode := map[bool]int{true: 0, false: 1}[tt.want["verdict"] == "grant"]; code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
		})
	}
	got, _ := inspectVector(t, "v2/knock2-a-multi-v4.bin", nil, "--at", "1796083200")
	if fmt.Sprint(got["requests"]) != "[tcp/2000 tcp/3000 udp/8000]" || fmt.Sprint(got["chain"]) != "[CN=client-a,O=Vector Test]" {
		t.Errorf("requests %v, chain %v; want every request and the chain's subjects", got["requests"], got["chain"])
	}
}
