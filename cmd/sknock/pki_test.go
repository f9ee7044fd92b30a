package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/pki"
)

type pkiRun struct {
	code           int
	stdout, stderr string
}

func runPKIForTest(args ...string) pkiRun {
	var stdout, stderr bytes.Buffer
	code := runPKI(args, &stdout, &stderr)
	return pkiRun{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestRunPKIEndToEnd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(passwordEnv, "from-env")
	steps := []struct {
		name     string
		give     []string
		wantCode int
		wantErr  string // substring of stderr
	}{
		{name: "init", give: []string{"init", "--dir", dir}},
		{name: "init again", give: []string{"init", "--dir", dir}, wantCode: 1, wantErr: "already exists"},
		{name: "server", give: []string{"server", "--dir", dir, "--name", "gatekeeper", "--password-file", pwFile}},
		{name: "client modern", give: []string{"client", "--dir", dir, "--name", "alice", "--allow", "tcp/2000,udp/8000", "--password-file", pwFile}},
		{name: "client legacy env password", give: []string{"client", "--dir", dir, "--name", "bob", "--allow", "tcp/22", "--legacy", "--days", "30"}},
		{name: "refuse overwrite", give: []string{"client", "--dir", dir, "--name", "alice", "--allow", "tcp/22", "--password-file", pwFile}, wantCode: 1, wantErr: "already exists"},
		{name: "bad allow", give: []string{"client", "--dir", dir, "--name", "carol", "--allow", "tcp/0"}, wantCode: 2, wantErr: "--allow"},
		{name: "missing allow", give: []string{"client", "--dir", dir, "--name", "carol"}, wantCode: 2, wantErr: "--allow is required"},
		{name: "bad name", give: []string{"server", "--dir", dir, "--name", "../x"}, wantCode: 2, wantErr: "invalid name"},
		{name: "revoke", give: []string{"revoke", "--dir", dir, "--name", "alice"}},
		{name: "revoke unknown", give: []string{"revoke", "--dir", dir, "--name", "nobody"}, wantCode: 1, wantErr: "no certificate named nobody"},
		{name: "crl", give: []string{"crl", "--dir", dir, "--days", "7"}},
	}
	for _, s := range steps {
		got := runPKIForTest(s.give...)
		if got.code != s.wantCode || !strings.Contains(got.stderr, s.wantErr) {
			t.Fatalf("%s: code %d stderr %q, want code %d stderr containing %q", s.name, got.code, got.stderr, s.wantCode, s.wantErr)
		}
		if s.wantCode != 0 && (!strings.HasPrefix(got.stderr, "sknock pki: ") || strings.Count(got.stderr, "\n") != 1) {
			t.Errorf("%s: stderr %q is not one line starting with \"sknock pki: \"", s.name, got.stderr)
		}
	}

	cas, err := pki.LoadCertificates(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pki.LoadCRL(filepath.Join(dir, pki.CRLFile), cas)
	if err != nil {
		t.Fatal(err)
	}
	if crl.NextUpdate.Sub(crl.ThisUpdate) != 7*24*time.Hour {
		t.Errorf("CRL validity %v, want 7 days", crl.NextUpdate.Sub(crl.ThisUpdate))
	}
	v := pki.NewVerifier(cas, crl)
	now := time.Now()
	alice, err := pki.LoadBundle(filepath.Join(dir, "alice.pfx"), "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(alice.Cert.Raw, now); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("alice: got %v, want ErrRevoked", err)
	}
	bob, err := pki.LoadBundle(filepath.Join(dir, "bob.pfx"), "from-env")
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(bob.Cert.Raw, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Authorization.CLIString(); got != "tcp/22" {
		t.Errorf("bob authorization %q, want tcp/22", got)
	}
	if _, err := pki.LoadBundle(filepath.Join(dir, "gatekeeper.pfx"), "s3cret"); err != nil {
		t.Error(err)
	}
}

func TestRunPKIUsage(t *testing.T) {
	t.Setenv(passwordEnv, "")
	dir := t.TempDir()
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "no command", give: nil, wantCode: 2, wantErr: "sknock pki: missing command"},
		{name: "unknown command", give: []string{"frob"}, wantCode: 2, wantErr: `unknown command "frob"`},
		{name: "help", give: []string{"-h"}, wantOut: "Example:"},
		{name: "command help", give: []string{"client", "-h"}, wantOut: "--allow tcp/2000,udp/8000"},
		{name: "bad flag", give: []string{"init", "--bogus"}, wantCode: 2, wantErr: "-bogus"},
		{name: "missing dir", give: []string{"crl"}, wantCode: 2, wantErr: "--dir is required"},
		{name: "extra argument", give: []string{"init", "--dir", dir, "extra"}, wantCode: 2, wantErr: `unexpected argument "extra"`},
		{name: "bad days", give: []string{"init", "--dir", dir, "--days", "0"}, wantCode: 2, wantErr: "--days"},
		{name: "no password", give: []string{"server", "--dir", dir, "--name", "s"}, wantCode: 2, wantErr: "--password-file FILE or set SKNOCK_PASSWORD"},
		{name: "missing password file", give: []string{"server", "--dir", dir, "--name", "s", "--password-file", filepath.Join(dir, "nope")}, wantCode: 2, wantErr: "--password-file"},
		{name: "no CA", give: []string{"crl", "--dir", dir}, wantCode: 1, wantErr: "sknock pki: write CRL in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runPKIForTest(tt.give...)
			if got.code != tt.wantCode || !strings.Contains(got.stdout, tt.wantOut) || !strings.Contains(got.stderr, tt.wantErr) {
				t.Errorf("got code %d stdout %q stderr %q; want code %d stdout ~%q stderr ~%q",
					got.code, got.stdout, got.stderr, tt.wantCode, tt.wantOut, tt.wantErr)
			}
		})
	}
}
