package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/crlfetch"
	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/pki"
)

// crlOrigin serves a CA directory's ca.crl over HTTP on loopback, as a
// fleet's CRL URL, with an ETag of its content; it counts full answers
// and 304s.
type crlOrigin struct {
	dir         string
	full, unmod atomic.Int64
	url         string
}

func newCRLOrigin(t *testing.T, dir string) *crlOrigin {
	o := &crlOrigin{dir: dir}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(filepath.Join(o.dir, "ca.crl"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		sum := sha256.Sum256(data)
		etag := `"` + hex.EncodeToString(sum[:8]) + `"`
		if r.Header.Get("If-None-Match") == etag {
			o.unmod.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		o.full.Add(1)
		w.Header().Set("ETag", etag)
		w.Write(data)
	}))
	t.Cleanup(ts.Close)
	o.url = ts.URL + "/ca.crl"
	return o
}

// rewriteCRL replaces the crl section of daemonPKI's config file with
// section and returns the configuration loaded from it (a reload reads the
// file again).
func rewriteCRL(t *testing.T, cfg config.Config, section string) config.Config {
	t.Helper()
	data, err := os.ReadFile(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	old := "crl:\n  file: " + cfg.CRLFile + "\n"
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("%s has no %q", cfg.Path, old)
	}
	data = bytes.Replace(data, []byte(old), []byte(section), 1)
	if err := os.WriteFile(cfg.Path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := config.LoadConfig(cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// nextChangedCRL waits for the next refresh that changed the trust state
// (refreshes that found nothing new are skipped).
func nextChangedCRL(t *testing.T, d *testDaemon) crlRefresh {
	t.Helper()
	for range 10 {
		if r := d.crls.next(t, "CRL refresh"); r.changed {
			return r
		}
	}
	t.Fatal("no CRL refresh changed the trust state")
	return crlRefresh{}
}

// TestDaemonFleetCRL: a host configured with crl.url and no crl.file yet
// fetches the CRL at start and comes up; the next fetch of the unchanged
// CRL is a 304; a revocation published at the URL refuses the client
// after one refresh.
func TestDaemonFleetCRL(t *testing.T) {
	dir, cfg := daemonPKI(t)
	origin := newCRLOrigin(t, dir)
	fetched := filepath.Join(t.TempDir(), "fetched", "ca.crl") // does not exist yet
	cfg = rewriteCRL(t, cfg, fmt.Sprintf("crl:\n  file: %s\n  url: %s\n", fetched, origin.url))
	f := newFakeOS()
	f.edit = func(deps *OSDeps) { deps.Fetch = crlfetch.New(nil).Fetch }
	d := runDaemon(t, &cfg, f)

	if _, err := os.Stat(cfg.CRLFile); err != nil {
		t.Fatalf("crl.file after the start: %v, want the fetched CRL", err)
	}
	if r := d.crls.next(t, "first CRL refresh"); r.changed || r.err != nil || len(r.warnings) > 0 {
		t.Fatalf("first refresh: changed %v, err %v, warnings %v; want an unchanged CRL", r.changed, r.err, r.warnings)
	}
	if full, unmod := origin.full.Load(), origin.unmod.Load(); full != 1 || unmod != 1 {
		t.Errorf("origin sent %d full CRLs and %d 304s, want 1 and 1", full, unmod)
	}
	alice := netip.MustParseAddr("198.18.0.2")
	injectKnock(t, f, alice.String(), sealFor(t, dir, "alice", 2000, alice.String()))
	if k := d.knocks.next(t, "knock"); !k.dec.Granted() {
		t.Fatalf("alice before the revocation: %v (%v), want a grant", k.dec.Reason, k.dec.Err)
	}

	testpki.Load(t, dir, nil).Revoke(t, "alice") // and publish at the URL
	d.hup <- os.Interrupt                        // a reload starts a refresh, as the tick does
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatal(err)
	}
	if r := nextChangedCRL(t, d); r.err != nil || r.next.info.Serials() != 1 {
		t.Fatalf("refresh after the revocation: err %v, %d serials; want 1", r.err, r.next.info.Serials())
	}
	injectKnock(t, f, alice.String(), sealFor(t, dir, "alice", 2000, alice.String()))
	if k := d.knocks.next(t, "knock"); k.dec.Reason != gate.ReasonRevoked {
		t.Fatalf("alice after the revocation: %v, want revoked", k.dec.Reason)
	}
	d.stop()
	if !strings.Contains(d.logs.String(), `"msg":"trust reloaded (CRL refresh)"`) {
		t.Errorf("no \"trust reloaded (CRL refresh)\" line:\n%s", d.logs)
	}
}

// TestDaemonNeedsSomeCRL: with crl.url failing and no crl.file, the
// daemon refuses to start, saying both failed and why the fetch did.
func TestDaemonNeedsSomeCRL(t *testing.T) {
	_, cfg := daemonPKI(t)
	cfg.CRLFile = filepath.Join(t.TempDir(), "ca.crl")
	cfg.CRLURL = "http://crl.invalid/ca.crl"
	f := newFakeOS()
	var stderr bytes.Buffer
	code := Serve(context.Background(), &cfg, nil, &stderr, f.deps())
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, want := range []string{"crl.file: load CRL " + cfg.CRLFile, "fetching http://crl.invalid/ca.crl gave none either", "crl.url: ", "no network in tests"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr %q lacks %q", stderr.String(), want)
		}
	}
	if applied, _ := f.counts(); applied != 0 {
		t.Errorf("rules applied %d times, want none", applied)
	}
}

// TestCRLFetchDoesNotHoldTheLoop: while a CRL fetch hangs, the
// maintenance loop goes on (a SIGHUP is answered); the refresh lands
// when the fetch returns, moot under the reload's newer state, and is
// done again under it.
func TestCRLFetchDoesNotHoldTheLoop(t *testing.T) {
	dir, cfg := daemonPKI(t)
	// crl.file exists: no fetch at start, but one as the loop starts.
	cfg = rewriteCRL(t, cfg, fmt.Sprintf("crl:\n  file: %s\n  url: http://crl.invalid/ca.crl\n", cfg.CRLFile))
	release := make(chan struct{})
	var returned atomic.Bool
	f := newFakeOS()
	f.edit = func(deps *OSDeps) {
		deps.Fetch = func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
			<-release
			returned.Store(true)
			data, err := os.ReadFile(filepath.Join(dir, "ca.crl"))
			return crlfetch.Result{Data: data}, err
		}
	}
	d := runDaemon(t, &cfg, f)
	d.hup <- os.Interrupt
	if err := d.reloads.next(t, "reload while the fetch hangs"); err != nil {
		t.Fatal(err)
	}
	if returned.Load() {
		t.Fatal("the fetch returned before it was released")
	}
	close(release)
	// The refresh began under the start's state (generation 1); the
	// reload applied generation 2, which makes it moot: it is done again.
	if r := d.crls.next(t, "CRL refresh"); r.err != nil || len(r.warnings) > 0 || r.gen != 1 {
		t.Fatalf("refresh: err %v, warnings %v, generation %d; want the start's (1)", r.err, r.warnings, r.gen)
	}
	if r := d.crls.next(t, "CRL refresh after the reload"); r.err != nil || r.gen != 2 {
		t.Fatalf("refresh again: err %v, generation %d; want the reload's (2)", r.err, r.gen)
	}
}

// TestDaemonStaleCRLPolicy: past the CRL's next update (a fake clock),
// crl.stale: warn keeps granting with a warning, crl.stale: refuse
// refuses every knock.
func TestDaemonStaleCRLPolicy(t *testing.T) {
	for _, tt := range []struct {
		name    string
		refuse  bool
		want    gate.Reason
		wantLog string
	}{
		{"warn", false, gate.ReasonNone, "its revocations still apply"},
		{"refuse", true, gate.ReasonRevoked, "EVERY knock is refused (crl.stale: refuse)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir, cfg := daemonPKI(t)
			cfg.CRLStaleRefuse = tt.refuse
			later := time.Now().Add(31 * 24 * time.Hour) // the CRL's next update is 30 days out
			f := newFakeOS()
			f.edit = func(deps *OSDeps) { deps.Clock = func() time.Time { return later } }
			d := runDaemon(t, &cfg, f)
			src := netip.MustParseAddr("198.18.0.2")
			injectKnock(t, f, src.String(), testpki.Load(t, dir, nil).Seal(t, "alice", packet.TCP, 2000, src, later))
			if k := d.knocks.next(t, "knock"); k.dec.Reason != tt.want {
				t.Fatalf("knock past the next update: %v (%v), want %v", k.dec.Reason, k.dec.Err, tt.want)
			}
			d.stop()
			lines := logLines(d.logs, `"check":"crl_stale"`)
			if len(lines) == 0 || !strings.Contains(lines[0], tt.wantLog) || !strings.Contains(lines[0], `"level":"warn"`) {
				t.Errorf("crl_stale warnings %q, want one saying %q", lines, tt.wantLog)
			}
		})
	}
}

// TestDaemonWarnsWhileNoCRL: without a CRL the start log warns, and the
// warning comes again every healthEvery while it lasts.
func TestDaemonWarnsWhileNoCRL(t *testing.T) {
	_, cfg := daemonPKI(t)
	cfg.CRLFile = ""
	f := newFakeOS()
	f.edit = func(deps *OSDeps) { deps.HealthEvery = 5 * time.Millisecond }
	d := runDaemon(t, &cfg, f)
	for i := range 2 {
		w := d.health.next(t, "periodic warnings")
		if len(w) != 1 || w[0].Check != "no_crl" {
			t.Fatalf("periodic warnings %d: %+v, want one no_crl", i, w)
		}
	}
	d.stop()
	lines := logLines(d.logs, `"check":"no_crl"`)
	if len(lines) < 3 || !strings.Contains(lines[0], "revocation is off") {
		t.Errorf("no_crl lines %q, want the start's and two periodic ones", lines)
	}
	trust := strings.Index(d.logs.String(), `"msg":"trust loaded"`)
	if first := strings.Index(d.logs.String(), `"check":"no_crl"`); trust < 0 || first < trust {
		t.Errorf("want the no_crl warning right after \"trust loaded\":\n%s", d.logs)
	}
}

// TestHealthWarnings judges trust states at a fixed time.
func TestHealthWarnings(t *testing.T) {
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	crl := func(this, next time.Duration) CRLInfo {
		return CRLInfo{Key: "crl", File: "/ca.crl", Issuer: "CN=CA", ThisUpdate: now.Add(this), NextUpdate: now.Add(next)}
	}
	healthy := TrustInfo{
		Server: "CN=server", ServerNotAfter: now.Add(300 * day),
		CAs:  []CAInfo{{Subject: "CN=CA", NotAfter: now.Add(3000 * day), CRL: "crl"}},
		CRLs: []CRLInfo{crl(-day, 29*day)},
	}
	tests := []struct {
		name string
		edit func(*TrustInfo)
		want []string // checks, in order
		text string   // in the first warning
	}{
		{name: "healthy", edit: func(*TrustInfo) {}},
		{name: "no CRL", edit: func(i *TrustInfo) { i.CRLs, i.CAs[0].CRL = nil, "" }, want: []string{"no_crl"}, text: "revocation is off"},
		{name: "second CA without CRL", edit: func(i *TrustInfo) {
			i.CAs = append(i.CAs, CAInfo{Subject: "CN=Other", NotAfter: now.Add(3000 * day)})
		}, want: []string{"no_crl"}, text: "CA CN=Other has no CRL"},
		{name: "pending fetch is no warning", edit: func(i *TrustInfo) { i.CRLs, i.CAs[0].CRL, i.Pending = nil, "", []config.CRLSource{{Key: "crl"}} }},
		{name: "CRL stale", edit: func(i *TrustInfo) { i.CRLs = []CRLInfo{crl(-31*day, -time.Hour)} }, want: []string{"crl_stale"}, text: "revocations still apply"},
		{name: "CRL stale, refuse", edit: func(i *TrustInfo) { i.CRLs, i.StaleRefuse = []CRLInfo{crl(-31*day, -time.Hour)}, true }, want: []string{"crl_stale"}, text: "EVERY knock is refused"},
		{name: "30-day CRL 6 days before", edit: func(i *TrustInfo) { i.CRLs = []CRLInfo{crl(-24*day, 6*day)} }, want: []string{"crl_next_update_soon"}, text: "in 6 days"},
		{name: "30-day CRL 8 days before", edit: func(i *TrustInfo) { i.CRLs = []CRLInfo{crl(-22*day, 8*day)} }},
		{name: "1-day CRL 5 hours before", edit: func(i *TrustInfo) { i.CRLs = []CRLInfo{crl(-19*time.Hour, 5*time.Hour)} }, want: []string{"crl_next_update_soon"}, text: "in 5h0m0s"},
		{name: "1-day CRL 7 hours before", edit: func(i *TrustInfo) { i.CRLs = []CRLInfo{crl(-17*time.Hour, 7*time.Hour)} }},
		{name: "server certificate in 20 days", edit: func(i *TrustInfo) { i.ServerNotAfter = now.Add(20 * day) }, want: []string{"server_certificate_expiry"}, text: "in 20 days"},
		{name: "server certificate expired", edit: func(i *TrustInfo) { i.ServerNotAfter = now.Add(-time.Hour) }, want: []string{"server_certificate_expiry"}, text: "EXPIRED"},
		{name: "CA in 10 days", edit: func(i *TrustInfo) { i.CAs[0].NotAfter = now.Add(10 * day) }, want: []string{"ca_certificate_expiry"}, text: "CN=CA expires"},
		{name: "several", edit: func(i *TrustInfo) {
			i.CRLs, i.CAs[0].CRL, i.ServerNotAfter = nil, "", now.Add(day)
		}, want: []string{"no_crl", "server_certificate_expiry"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := healthy
			info.CAs = append([]CAInfo(nil), healthy.CAs...)
			tt.edit(&info)
			got := healthWarnings(info, now)
			var checks []string
			for _, w := range got {
				checks = append(checks, w.Check)
			}
			if fmt.Sprint(checks) != fmt.Sprint(tt.want) {
				t.Fatalf("checks = %v, want %v (%+v)", checks, tt.want, got)
			}
			if tt.text != "" && !strings.Contains(got[0].Text, tt.text) {
				t.Errorf("warning %q lacks %q", got[0].Text, tt.text)
			}
		})
	}
}

// TestCheckWarns: --check prints the warnings on stderr and still
// passes; crl.required turns a missing CRL into a failure.
func TestCheckWarns(t *testing.T) {
	_, base := daemonPKI(t)
	now := time.Now()
	tests := []struct {
		name       string
		edit       func(*config.Config)
		at         time.Time
		wantCode   int
		wantStderr string
	}{
		{name: "healthy", edit: func(*config.Config) {}, at: now},
		{name: "no CRL", edit: func(c *config.Config) { c.CRLFile = "" }, at: now, wantStderr: "sknockd: warning: no CRL configured (crl.file is empty): revocation is off"},
		{name: "no CRL, required", edit: func(c *config.Config) { c.CRLFile, c.CRLRequired = "", true }, at: now, wantCode: 2, wantStderr: "crl.required: CA CN=sknock CA has no CRL"},
		{name: "CRL, required", edit: func(c *config.Config) { c.CRLRequired = true }, at: now},
		{name: "stale CRL", edit: func(*config.Config) {}, at: now.Add(31 * 24 * time.Hour), wantStderr: "is past its next update"},
		{name: "CRL near its next update", edit: func(*config.Config) {}, at: now.Add(25 * 24 * time.Hour), wantStderr: "reaches its next update"},
		{name: "server certificate near expiry", edit: func(*config.Config) {}, at: now.Add(340 * 24 * time.Hour), wantStderr: "server certificate CN=server expires"},
		{name: "CRL to fetch", edit: func(c *config.Config) {
			c.CRLFile, c.CRLURL = filepath.Join(t.TempDir(), "x.crl"), "http://crl.invalid/ca.crl"
		}, at: now,
			wantStderr: "does not exist yet: sknockd fetches it from http://crl.invalid/ca.crl at start"},
		{name: "replay file under a file", edit: func(c *config.Config) { c.ReplayFile = filepath.Join(c.CRLFile, "replay") }, at: now,
			wantStderr: "the replay memory cannot be kept across restarts (" + base.CRLFile + " is not a directory)"},
		{name: "no replay file", edit: func(c *config.Config) { c.ReplayFile = "" }, at: now,
			wantStderr: "knock.replay_file is empty): after each start every knock is refused for the timestamp tolerance (7s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			var stdout, stderr bytes.Buffer
			code := Check(&cfg, &stdout, &stderr, tt.at)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, stderr.String())
			}
			if tt.wantStderr == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tt.wantStderr)
			}
			if code == 0 && !strings.Contains(stdout.String(), "is valid") {
				t.Errorf("stdout %q, want the summary", stdout.String())
			}
		})
	}
}

// TestCRLPerCA: two CAs, each with its own CRL (crl.file and crl.extra):
// each CRL refuses its CA's revoked client; two CRLs of one CA, and a
// CRL of no listed CA, are refused.
func TestCRLPerCA(t *testing.T) {
	a := testpki.New(t, &testpki.Options{Clients: map[string]string{"ann": "tcp/2000"}})
	b := testpki.New(t, &testpki.Options{Clients: map[string]string{"bob": "tcp/2000", "ben": "tcp/2000"}})
	stranger := testpki.New(t, nil)
	a.WriteCRL(t)
	b.Revoke(t, "bob")
	stranger.WriteCRL(t)
	caFile := filepath.Join(t.TempDir(), "cas.pem")
	pemA, _ := os.ReadFile(filepath.Join(a.Dir, "ca.pem"))
	pemB, _ := os.ReadFile(filepath.Join(b.Dir, "ca.pem"))
	if err := os.WriteFile(caFile, append(pemA, pemB...), 0o644); err != nil {
		t.Fatal(err)
	}
	base := config.Default()
	base.ServerPKCS12, base.ServerPasswordFile, base.ServerCA = a.ServerPKCS12, a.PasswordFile, caFile
	base.CRLFile = a.CRLFile()
	tests := []struct {
		name    string
		extra   []config.CRLSource
		wantErr string
		revoked []string
		granted []string
	}{
		{name: "one CRL per CA", extra: []config.CRLSource{{Key: "crl.extra[0]", File: b.CRLFile()}}, revoked: []string{"bob"}, granted: []string{"ben"}},
		{name: "second CA without CRL", granted: []string{"bob", "ben"}},
		{name: "two CRLs of one CA", extra: []config.CRLSource{{Key: "crl.extra[0]", File: b.CRLFile()}, {Key: "crl.extra[1]", File: copyFile(t, b.CRLFile())}},
			wantErr: "crl.extra[1].file: "},
		{name: "CRL of an unlisted CA", extra: []config.CRLSource{{Key: "crl.extra[0]", File: stranger.CRLFile()}}, wantErr: "crl.extra[0].file: load CRL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.CRLExtra = tt.extra
			st, _, err := loadState(context.Background(), &cfg, trustLoad{})
			trust, info := st.trust, st.info
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("loadTrust error = %v, want %q...", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.extra) == 0 && (len(healthWarnings(info, time.Now())) != 1 || info.CAs[1].CRL != "") {
				t.Errorf("CA B without a CRL: %+v, want a no_crl warning for it", healthWarnings(info, time.Now()))
			}
			for _, name := range tt.revoked {
				if _, err := trust.Verifier.Verify(b.Issued(t, name).Cert.Raw, time.Now()); err == nil {
					t.Errorf("%s verified, want revoked", name)
				}
			}
			for _, name := range tt.granted {
				if _, err := trust.Verifier.Verify(b.Issued(t, name).Cert.Raw, time.Now()); err != nil {
					t.Errorf("%s: %v, want verified", name, err)
				}
			}
		})
	}
}

func copyFile(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFetchCRLRefusesIncomplete: a delta CRL or one over the size bound
// from the URL never replaces the file, and the warning says why.
func TestFetchCRLRefusesIncomplete(t *testing.T) {
	_, cfg := daemonPKI(t)
	good, err := os.ReadFile(cfg.CRLFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg.CRLURL = "http://crl.invalid/ca.crl"
	tooBig := func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
		return crlfetch.Result{}, fmt.Errorf("fetch x: %w: more than 16777216 bytes", crlfetch.ErrTooLarge)
	}
	_, warnings, err := loadState(context.Background(), &cfg, trustLoad{which: fetchAll, fetch: tooBig})
	if err != nil || len(warnings) != 1 || !errors.Is(warnings[0], crlfetch.ErrTooLarge) || !strings.HasPrefix(warnings[0].Error(), "crl.url: ") {
		t.Errorf("err %v, warnings %v; want one crl.url warning wrapping ErrTooLarge", err, warnings)
	}
	if disk, _ := os.ReadFile(cfg.CRLFile); !bytes.Equal(disk, good) {
		t.Error("crl.file changed")
	}
}

// TestReloadAddsCRLURL: a reload that adds crl.url with a crl.file that
// does not exist yet fetches it then, instead of refusing the reload.
func TestReloadAddsCRLURL(t *testing.T) {
	dir, cfg := daemonPKI(t)
	origin := newCRLOrigin(t, dir)
	f := newFakeOS()
	f.edit = func(deps *OSDeps) { deps.Fetch = crlfetch.New(nil).Fetch }
	d := runDaemon(t, &cfg, f)
	fetched := filepath.Join(t.TempDir(), "ca.crl")
	rewriteCRL(t, cfg, fmt.Sprintf("crl:\n  file: %s\n  url: %s\n", fetched, origin.url))
	d.hup <- os.Interrupt
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatalf("reload adding crl.url: %v", err)
	}
	if _, err := os.Stat(fetched); err != nil {
		t.Errorf("crl.file after the reload: %v", err)
	}
}

// TestFetchCRLBoundToIssuer: a CRL source belongs to the CA whose CRL its
// file holds: a CRL of another trusted CA fetched from its URL is refused
// with a warning naming both and the file is kept (it would un-revoke the
// first CA's clients); on a first fetch, a CRL of the CA another source
// holds is refused (it would make the next start fail), and so is a CRL
// past its next update.
func TestFetchCRLBoundToIssuer(t *testing.T) {
	a := testpki.New(t, &testpki.Options{Clients: map[string]string{"ann": "tcp/2000"}})
	b := testpki.New(t, nil)
	a.Revoke(t, "ann")
	b.WriteCRL(t)
	caFile := filepath.Join(t.TempDir(), "cas.pem")
	pemA, _ := os.ReadFile(filepath.Join(a.Dir, "ca.pem"))
	pemB, _ := os.ReadFile(filepath.Join(b.Dir, "ca.pem"))
	if err := os.WriteFile(caFile, append(pemA, pemB...), 0o644); err != nil {
		t.Fatal(err)
	}
	crlA, _ := os.ReadFile(a.CRLFile())
	crlB, _ := os.ReadFile(b.CRLFile())
	serve := func(data []byte) Fetcher {
		return func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
			return crlfetch.Result{Data: data}, nil
		}
	}
	base := config.Default()
	base.ServerPKCS12, base.ServerPasswordFile, base.ServerCA = a.ServerPKCS12, a.PasswordFile, caFile
	base.CRLURL = "http://crl.invalid/a.crl"
	nameA, nameB := pki.CAName(a.Server.CAs[0]), pki.CAName(b.Server.CAs[0])
	tests := []struct {
		name    string
		held    []byte // crl.file's contents; nil: none yet
		extraB  bool   // crl.extra[0] holds B's CRL
		served  []byte
		now     time.Time
		want    []string // in the one warning; none: fetched
		wantOut []byte   // crl.file afterwards
	}{
		{name: "another CA's CRL", held: crlA, served: crlB, want: []string{"crl.url: ", "signed by " + nameB, "the CRL of " + nameA}, wantOut: crlA},
		{name: "first fetch of a CA another source holds", extraB: true, served: crlB, want: []string{"signed by " + nameB, "crl.extra[0].file"}},
		{name: "first fetch of a stale CRL", served: crlA, now: time.Now().AddDate(0, 2, 0), want: []string{"first fetch", "has passed"}},
		{name: "first fetch", served: crlA, wantOut: crlA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.CRLFile = filepath.Join(t.TempDir(), "ca.crl")
			if tt.held != nil {
				os.WriteFile(cfg.CRLFile, tt.held, 0o644)
			}
			if tt.extraB {
				cfg.CRLExtra = []config.CRLSource{{Key: "crl.extra[0]", File: b.CRLFile()}}
			}
			how := trustLoad{which: fetchAll, fetch: serve(tt.served), validators: &crlValidators{}}
			if !tt.now.IsZero() {
				how.now = func() time.Time { return tt.now }
			}
			warnings := fetchCRLs(context.Background(), &cfg, append(slices.Clone(a.Server.CAs), b.Server.CAs...), how)
			if len(tt.want) == 0 && len(warnings) != 0 {
				t.Errorf("warnings %v, want none", warnings)
			}
			if len(tt.want) != 0 {
				if len(warnings) != 1 || !errors.Is(warnings[0], pki.ErrCRLUpdate) {
					t.Fatalf("warnings %v, want one wrapping ErrCRLUpdate", warnings)
				}
				for _, w := range tt.want {
					if !strings.Contains(warnings[0].Error(), w) {
						t.Errorf("warning %q lacks %q", warnings[0], w)
					}
				}
			}
			if got, _ := os.ReadFile(cfg.CRLFile); !bytes.Equal(got, tt.wantOut) {
				t.Errorf("crl.file holds %d bytes, want %d", len(got), len(tt.wantOut))
			}
		})
	}
}
