package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/pki"
)

func vectorPath(name string) string {
	p, _ := filepath.Abs(filepath.Join("..", "..", "..", "shared", "vectors", name))
	return p
}

func TestLoadTrustFetchesCRL(t *testing.T) {
	good, err := os.ReadFile(vectorPath("ca.crl"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		onDisk      []byte // nil: no file yet
		fetched     []byte
		fetchErr    error
		wantErr     bool
		wantWarning bool
		wantDisk    []byte
	}{
		{name: "fetch fills an empty file", fetched: good, wantDisk: good},
		{name: "fetch error keeps the good file", onDisk: good, fetchErr: errors.New("connection refused"), wantWarning: true, wantDisk: good},
		{name: "garbage from the URL never overwrites", onDisk: good, fetched: []byte("not a CRL"), wantWarning: true, wantDisk: good},
		{name: "fetch error and no file fails closed", fetchErr: errors.New("timeout"), wantErr: true, wantWarning: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			crlFile := filepath.Join(dir, "ca.crl")
			if tt.onDisk != nil {
				os.WriteFile(crlFile, tt.onDisk, 0o644)
			}
			t.Setenv("SKNOCK_TEST_PW", "portknocking")
			cfg := defaultConfig()
			cfg.ServerPKCS12, cfg.ServerPasswordFile, cfg.ServerPasswordEnv = vectorPath("server.pfx"), "", "SKNOCK_TEST_PW"
			cfg.CRLFile, cfg.CRLURL = crlFile, "https://crl.invalid/ca.crl"
			fetch := func(context.Context, string) ([]byte, error) { return tt.fetched, tt.fetchErr }
			trust, info, warnings, err := loadTrust(context.Background(), &cfg, fetch)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if (len(warnings) > 0) != tt.wantWarning {
				t.Errorf("warnings = %v, want some: %v", warnings, tt.wantWarning)
			}
			if tt.wantErr {
				return
			}
			if trust == nil || info.CRLSerials != 1 {
				t.Errorf("trust %v, CRL serials %d, want the vectors' CRL with 1", trust, info.CRLSerials)
			}
			disk, _ := os.ReadFile(crlFile)
			if !bytes.Equal(disk, tt.wantDisk) {
				t.Errorf("crl.file holds %d bytes, want %d", len(disk), len(tt.wantDisk))
			}
		})
	}
}

func TestFetchRefusesAnOlderCRL(t *testing.T) {
	dir, cfg := daemonPKI(t) // a CA whose first CRL revokes nothing
	before, err := os.ReadFile(cfg.CRLFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.Revoke(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCRL(dir, 0); err != nil { // the current CRL, revoking alice
		t.Fatal(err)
	}

	cfg.CRLURL = "http://crl.invalid/ca.crl"
	stale := func(context.Context, string) ([]byte, error) { return before, nil }
	_, info, warnings, err := loadTrust(context.Background(), &cfg, stale)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Error(), "older") {
		t.Errorf("warnings = %v, want one saying the fetched CRL is older", warnings)
	}
	if info.CRLSerials != 1 {
		t.Errorf("CRL in force revokes %d serials, want 1 (alice stays revoked)", info.CRLSerials)
	}
}
