package daemon

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sknock/internal/config"
	"sknock/internal/crlfetch"
	"sknock/internal/testenv"
	"sknock/pki"
)

// vectorPath is the path of the interop vector file name (skipped when
// the vectors are absent; see testenv.VectorsDir).
func vectorPath(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testenv.VectorsDir(t), name)
}

func TestLoadTrustFetchesCRL(t *testing.T) {
	good, err := os.ReadFile(vectorPath(t, "ca.crl"))
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
			cfg := config.Default()
			cfg.ServerPKCS12, cfg.ServerPasswordFile, cfg.ServerPasswordEnv = vectorPath(t, "server.pfx"), "", "SKNOCK_TEST_PW"
			cfg.CRLFile, cfg.CRLURL = crlFile, "https://crl.invalid/ca.crl"
			fetch := func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
				return crlfetch.Result{Data: tt.fetched}, tt.fetchErr
			}
			st, warnings, err := loadState(context.Background(), &cfg, trustLoad{which: fetchAll, fetch: fetch})
			trust, info := st.trust, st.info
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if (len(warnings) > 0) != tt.wantWarning {
				t.Errorf("warnings = %v, want some: %v", warnings, tt.wantWarning)
			}
			if tt.wantErr {
				return
			}
			if trust == nil || info.Serials() != 1 {
				t.Errorf("trust %v, CRL serials %d, want the vectors' CRL with 1", trust, info.Serials())
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
	stale := func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
		return crlfetch.Result{Data: before}, nil
	}
	st, warnings, err := loadState(context.Background(), &cfg, trustLoad{which: fetchAll, fetch: stale})
	info := st.info
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Error(), "older") {
		t.Errorf("warnings = %v, want one saying the fetched CRL is older", warnings)
	}
	if info.Serials() != 1 {
		t.Errorf("CRL in force revokes %d serials, want 1 (alice stays revoked)", info.Serials())
	}
}

func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "good"), filepath.Join(dir, "empty")
	os.WriteFile(good, []byte("secret\r\nsecond line\n"), 0o600)
	os.WriteFile(empty, []byte("\nsecret\n"), 0o600)
	missing := filepath.Join(dir, "nope")
	t.Setenv("SKNOCK_TEST_PW", "from-env")
	t.Setenv("SKNOCK_TEST_PW_EMPTY", "")
	tests := []struct {
		name      string
		give      [2]string // server.password_file, server.password_env
		want      string
		wantErr   string // the whole message
		wantNoEnt bool   // the error wraps fs.ErrNotExist
	}{
		{name: "file", give: [2]string{good, ""}, want: "secret"},
		{name: "env", give: [2]string{"", "SKNOCK_TEST_PW"}, want: "from-env"},
		{name: "env set but empty", give: [2]string{"", "SKNOCK_TEST_PW_EMPTY"}, want: ""},
		{name: "env wins over file", give: [2]string{missing, "SKNOCK_TEST_PW"}, want: "from-env"},
		{name: "neither", give: [2]string{"", ""}, want: ""},
		{name: "env unset", give: [2]string{"", "SKNOCK_TEST_UNSET_VAR"}, wantErr: "server.password_env: environment variable SKNOCK_TEST_UNSET_VAR is not set"},
		{name: "empty first line", give: [2]string{empty, ""}, wantErr: "server.password_file: " + empty + ": empty first line (the password goes there)"},
		{name: "missing file", give: [2]string{missing, ""}, wantErr: "server.password_file: open " + missing + ": no such file or directory", wantNoEnt: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.ServerPasswordFile, cfg.ServerPasswordEnv = tt.give[0], tt.give[1]
			got, err := readPassword(&cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("readPassword error = %v, want %q", err, tt.wantErr)
				}
				if tt.wantNoEnt != errors.Is(err, fs.ErrNotExist) {
					t.Errorf("errors.Is(%v, fs.ErrNotExist) = %v, want %v", err, !tt.wantNoEnt, tt.wantNoEnt)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("readPassword = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestLoadTrustErrorsNameTheKey(t *testing.T) {
	t.Setenv("SKNOCK_TEST_PW", "portknocking")
	t.Setenv("SKNOCK_TEST_WRONG_PW", "nope")
	dir := t.TempDir()
	bundle := vectorPath(t, "server.pfx")
	tests := []struct {
		name    string
		edit    func(*config.Config)
		wantErr string // prefix of the message
	}{
		{name: "missing bundle", edit: func(c *config.Config) { c.ServerPKCS12 = filepath.Join(dir, "nope.pfx") },
			wantErr: "server.pkcs12: load bundle " + filepath.Join(dir, "nope.pfx") + ": "},
		{name: "wrong password", edit: func(c *config.Config) { c.ServerPasswordEnv = "SKNOCK_TEST_WRONG_PW" },
			wantErr: "server.pkcs12: load bundle " + bundle + ": wrong bundle password"},
		{name: "missing CA file", edit: func(c *config.Config) { c.ServerCA = filepath.Join(dir, "nope.pem") },
			wantErr: "server.ca: "},
		{name: "missing CRL", edit: func(c *config.Config) { c.CRLFile = filepath.Join(dir, "nope.crl") },
			wantErr: "crl.file: load CRL " + filepath.Join(dir, "nope.crl") + ": "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.ServerPKCS12, cfg.ServerPasswordFile, cfg.ServerPasswordEnv = bundle, "", "SKNOCK_TEST_PW"
			cfg.CRLFile = vectorPath(t, "ca.crl")
			tt.edit(&cfg)
			_, _, err := loadState(context.Background(), &cfg, trustLoad{})
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Errorf("loadTrust error = %v, want it to start with %q", err, tt.wantErr)
			}
		})
	}
}
