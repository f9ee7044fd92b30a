package gate

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/knock"
	"sknock/pki"
)

// testPKI is a CA made with package pki in a temporary directory, a server
// bundle, and client bundles by name.
type testPKI struct {
	dir     string
	server  *pki.Bundle
	clients map[string]*pki.Bundle
}

func newTestPKI(t testing.TB, clients map[string]string) *testPKI {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueServer(dir, "server", "pw", pki.IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: dir, clients: map[string]*pki.Bundle{}}
	var err error
	if p.server, err = pki.LoadBundle(filepath.Join(dir, "server.pfx"), "pw"); err != nil {
		t.Fatal(err)
	}
	for name, allow := range clients {
		a, err := pki.ParseAllow(allow)
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.IssueClient(dir, name, a, "pw", pki.IssueOptions{}); err != nil {
			t.Fatal(err)
		}
		if p.clients[name], err = pki.LoadBundle(filepath.Join(dir, name+".pfx"), "pw"); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// trust builds the trust state, with the CA's current CRL if one exists.
func (p *testPKI) trust(t testing.TB) *Trust {
	t.Helper()
	var crl *pki.CRL
	if crlPath := filepath.Join(p.dir, pki.CRLFile); fileExists(crlPath) {
		var err error
		if crl, err = pki.LoadCRL(crlPath, p.server.CAs); err != nil {
			t.Fatal(err)
		}
	}
	trust, err := NewTrust(p.server, p.server.CAs, crl, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

// seal makes a knock from the named client.
func (p *testPKI) seal(t testing.TB, client string, proto knock.Proto, port uint16, ip string, at time.Time) []byte {
	t.Helper()
	b := p.clients[client]
	pub, err := p.server.Cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	k := knock.Knock{Proto: proto, Port: port, ClientIP: netip.MustParseAddr(ip), Timestamp: uint32(at.Unix()), Certificate: b.Cert.Raw}
	data, err := knock.Seal(&k, b.Key, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestEngineGrantLifecycle(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,udp/8000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now, OpenDuration: 15 * time.Second, Policy: PolicyReject}, p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	other := netip.MustParseAddr("198.18.0.3")

	if v := e.Verdict(alice, 6, 2000); v != Reject {
		t.Fatalf("before knock: %v, want reject", v)
	}
	d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now()))
	if !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	tests := []struct {
		name    string
		src     netip.Addr
		ipProto uint8
		port    uint16
		want    Verdict
	}{
		{"granted port", alice, 6, 2000, Accept},
		{"same port over udp", alice, 17, 2000, Reject},
		{"other port", alice, 6, 2001, Reject},
		{"other source", other, 6, 2000, Reject},
		{"v4-mapped form of the source", netip.MustParseAddr("::ffff:198.18.0.2"), 6, 2000, Accept},
		{"unknown protocol", alice, 1, 2000, Drop},
	}
	for _, tt := range tests {
		if got := e.Verdict(tt.src, tt.ipProto, tt.port); got != tt.want {
			t.Errorf("%s: Verdict = %v, want %v", tt.name, got, tt.want)
		}
	}

	clock.Advance(14 * time.Second)
	if v := e.Verdict(alice, 6, 2000); v != Accept {
		t.Fatalf("at 14s: %v, want accept", v)
	}
	// A new knock extends the grant.
	if d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("second knock: %v %v", d.Reason, d.Err)
	}
	clock.Advance(14 * time.Second)
	if v := e.Verdict(alice, 6, 2000); v != Accept {
		t.Fatalf("extended grant at 28s: %v, want accept", v)
	}
	clock.Advance(2 * time.Second)
	if v := e.Verdict(alice, 6, 2000); v != Reject {
		t.Fatalf("after expiry: %v, want reject", v)
	}
	if n := e.Sweep(); n != 1 {
		t.Errorf("Sweep removed %d, want 1", n)
	}
	if n := e.Grants().Len(); n != 0 {
		t.Errorf("grants after sweep = %d", n)
	}
}

func TestEngineReplayOfGrantedDatagram(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	e := NewEngine(Config{Clock: clock.Now}, p.trust(t))
	src := netip.MustParseAddr("198.18.0.2")
	data := p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())
	if d := e.Knock(src, data); !d.Granted() {
		t.Fatalf("first: %v", d.Reason)
	}
	clock.Advance(3 * time.Second)
	if d := e.Knock(src, data); d.Reason != ReasonReplay {
		t.Fatalf("replay: %v, want replay", d.Reason)
	}
	// Concurrent copies of one fresh datagram yield one grant.
	fresh := p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.Knock(src, fresh).Granted() {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if granted != 1 {
		t.Errorf("%d of 8 concurrent copies granted, want 1", granted)
	}
	s := e.Snapshot()
	if s.Knocks["replay"] != 8 || s.Knocks["none"] != 2 {
		t.Errorf("counters = %v, want 8 replays, 2 grants", s.Knocks)
	}
}

func TestEngineRevocationOnReloadKeepsGrants(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000", "bob": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	e := NewEngine(Config{Clock: clock.Now}, p.trust(t))
	bob := netip.MustParseAddr("198.18.0.3")
	if d := e.Knock(bob, p.seal(t, "bob", knock.TCP, 2000, "198.18.0.3", clock.Now())); !d.Granted() {
		t.Fatalf("bob: %v", d.Reason)
	}
	if err := pki.Revoke(p.dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCRL(p.dir, 0); err != nil {
		t.Fatal(err)
	}
	e.SetTrust(p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	if d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())); d.Reason != ReasonRevoked {
		t.Fatalf("revoked alice: %v, want revoked", d.Reason)
	}
	if v := e.Verdict(bob, 6, 2000); v != Accept {
		t.Errorf("bob's grant lost on reload: %v", v)
	}
}

func TestEnginePolicies(t *testing.T) {
	src := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		give Policy
		want Verdict
	}{
		{PolicyDrop, Drop},
		{PolicyReject, Reject},
		{PolicyNone, Accept},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			e := NewEngine(Config{Policy: tt.give}, nil)
			if got := e.Verdict(src, 6, 2000); got != tt.want {
				t.Errorf("Verdict = %v, want %v", got, tt.want)
			}
			wantAudit := uint64(0)
			if tt.give == PolicyNone {
				wantAudit = 1
			}
			if got := e.Snapshot().WouldDeny; got != wantAudit {
				t.Errorf("WouldDeny = %d, want %d", got, wantAudit)
			}
		})
	}
}

func TestEngineWithoutTrustDenies(t *testing.T) {
	e := NewEngine(Config{}, nil)
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), make([]byte, 600)); d.Granted() {
		t.Fatal("granted without trust")
	}
}

func TestGrantTableBound(t *testing.T) {
	g := NewGrantTable(grantShards) // one per shard
	until := time.Now().Add(time.Minute)
	added := 0
	for i := range 64 {
		if g.Add(Grant{Source: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), Proto: knock.TCP, Port: 1}, until) {
			added++
		}
	}
	if added > grantShards || added == 0 {
		t.Errorf("added %d grants to a table of %d", added, grantShards)
	}
	if got := g.Len(); got != added {
		t.Errorf("Len = %d, want %d", got, added)
	}
}

func TestReplayCacheBoundFailsClosed(t *testing.T) {
	c := NewReplayCache(2)
	now := time.Now()
	exp := now.Add(10 * time.Second)
	for i, want := range []AddResult{Added, Added, Full} {
		if got := c.Add(ReplayKey{byte(i)}, exp, now); got != want {
			t.Errorf("Add %d = %v, want %v", i, got, want)
		}
	}
	// Once entries expire, they make room.
	if got := c.Add(ReplayKey{9}, exp.Add(20*time.Second), exp.Add(time.Second)); got != Added {
		t.Errorf("after expiry Add = %v, want Added", got)
	}
}

func TestVerdictDoesNotAllocate(t *testing.T) {
	tests := []struct {
		name string
		give *slog.Logger
	}{
		{name: "no logger"},
		// The one denial a second the limiter lets through allocates;
		// AllocsPerRun's average over 1000 runs rounds it away.
		{name: "logging", give: slog.New(&logRecorder{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Config{Policy: PolicyDrop, LogPerSecond: 1, Log: tt.give}, nil)
			src := netip.MustParseAddr("198.18.0.2")
			e.Grants().Add(Grant{Source: src, Proto: knock.TCP, Port: 2000}, time.Now().Add(time.Hour))
			other := netip.MustParseAddr("fd00:5e::7")
			allocs := testing.AllocsPerRun(1000, func() {
				e.Verdict(src, 6, 2000)
				e.Verdict(other, 6, 2000)
			})
			if allocs != 0 {
				t.Errorf("Verdict allocates %.1f times per call pair, want 0", allocs)
			}
		})
	}
}

func BenchmarkDecideKnownClient(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	trust := p.trust(b)
	now := time.Now()
	data := p.seal(b, "alice", knock.TCP, 2000, "198.18.0.2", now)
	in := Input{Datagram: data, Source: netip.MustParseAddr("198.18.0.2"), Now: now}
	if d := Decide(in, trust, nil); !d.Granted() { // warms the certificate cache
		b.Fatal(d.Reason, d.Err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(in, trust, nil); !d.Granted() {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkCryptoFloor is the least any server must spend on a knock:
// one P-256 ECDH and one ECDSA-SHA256 verification.
func BenchmarkCryptoFloor(b *testing.B) {
	server, _ := ecdh.P256().GenerateKey(rand.Reader)
	eph, _ := ecdh.P256().GenerateKey(rand.Reader)
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	msg := make([]byte, 500)
	digest := sha256.Sum256(msg)
	sig, _ := ecdsa.SignASN1(rand.Reader, client, digest[:])
	peer := eph.PublicKey()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := server.ECDH(peer); err != nil {
			b.Fatal(err)
		}
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(&client.PublicKey, d[:], sig) {
			b.Fatal("verify")
		}
	}
}

func BenchmarkVerdict(b *testing.B) {
	e := NewEngine(Config{}, nil)
	src := netip.MustParseAddr("198.18.0.2")
	e.Grants().Add(Grant{Source: src, Proto: knock.TCP, Port: 2000}, time.Now().Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		e.Verdict(src, 6, 2000)
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func TestEngineLogsOfReplayedSignedKnocksAreLimited(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	logs := &logRecorder{}
	e := NewEngine(Config{Clock: clock.Now, Log: slog.New(logs), LogPerSecond: 5}, p.trust(t))
	// A captured knock for a port alice may not open, replayed by anyone
	// within its window: every copy is denied after a signature check.
	data := p.seal(t, "alice", knock.TCP, 2001, "198.18.0.2", clock.Now())
	for range 100 {
		if d := e.Knock(netip.MustParseAddr("198.18.0.2"), data); d.Reason != ReasonNotAuthorized {
			t.Fatalf("reason %v, want not_authorized", d.Reason)
		}
	}
	if n := len(logs.lines()); n != 5 {
		t.Errorf("%d log lines for 100 denials in one second, want 5", n)
	}
	// A grant is always logged, even with the denial budget spent.
	e.Knock(netip.MustParseAddr("198.18.0.2"), p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now()))
	grants := 0
	for _, line := range logs.lines() {
		if line["verdict"].String() == "grant" {
			grants++
		}
	}
	if grants != 1 {
		t.Errorf("%d grant lines, want 1", grants)
	}
}

func TestEngineRefusesKnocksSealedBeforeItsReplayMemory(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	src := netip.MustParseAddr("198.18.0.2")
	// Sealed and granted by a previous sknockd 3 s ago, then captured: a
	// fresh engine has no memory of it, so it must not grant it again.
	old := p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now().Add(-3*time.Second))
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)
	if d := e.Knock(src, old); d.Reason != ReasonReplay {
		t.Fatalf("knock sealed before start: %v, want replay", d.Reason)
	}
	fresh := p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())
	if d := e.Knock(src, fresh); !d.Granted() {
		t.Fatalf("fresh knock: %v", d.Reason)
	}

	// A reload that widens the tolerance starts the memory afresh: a knock
	// granted under the narrow window may be forgotten before the wide one
	// ends.
	clock.Advance(20 * time.Second)
	recent := p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now().Add(-time.Second))
	wide := *trust
	wide.Tolerance = 60 * time.Second
	e.SetTrust(&wide)
	if d := e.Knock(src, recent); d.Reason != ReasonReplay {
		t.Fatalf("knock sealed before the widening: %v, want replay", d.Reason)
	}
	// Narrowing it again keeps the floor where it is.
	e.SetTrust(trust)
	if d := e.Knock(src, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("fresh knock after reloads: %v", d.Reason)
	}
}

// logKinds is the type of every attribute the engine logs. sknockd turns
// each into a zap field of the same type, and its readers (tests,
// scripts/bench.sh, jq filters) expect numbers to stay numbers.
var logKinds = map[string]slog.Kind{
	"verdict":           slog.KindString,
	"source":            slog.KindString,
	"decide_us":         slog.KindInt64,
	"reason":            slog.KindString,
	"detail":            slog.KindString,
	"proto":             slog.KindString,
	"port":              slog.KindUint64,
	"client_ip":         slog.KindString,
	"skew_seconds":      slog.KindFloat64,
	"subject":           slog.KindString,
	"serial":            slog.KindString,
	"open_seconds":      slog.KindFloat64,
	"suppressed_before": slog.KindUint64,
}

func TestEngineLogLines(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	alice := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name      string
		give      func(e *Engine)
		wantMsg   string
		wantLevel slog.Level
		wantKeys  []string
	}{
		{
			name: "grant",
			give: func(e *Engine) {
				e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now()))
			},
			wantMsg:   "knock",
			wantLevel: slog.LevelInfo,
			wantKeys:  []string{"verdict", "source", "decide_us", "proto", "port", "client_ip", "skew_seconds", "subject", "serial", "open_seconds"},
		},
		{
			name: "signed denial",
			give: func(e *Engine) {
				e.Knock(alice, p.seal(t, "alice", knock.TCP, 2001, "198.18.0.2", clock.Now()))
			},
			wantMsg:   "knock",
			wantLevel: slog.LevelWarn,
			wantKeys:  []string{"verdict", "source", "decide_us", "reason", "detail", "proto", "port", "client_ip", "skew_seconds", "subject", "serial"},
		},
		{
			name:      "garbage",
			give:      func(e *Engine) { e.Knock(alice, make([]byte, 600)) },
			wantMsg:   "knock",
			wantLevel: slog.LevelWarn,
			wantKeys:  []string{"verdict", "source", "decide_us", "reason", "detail"},
		},
		{
			name:      "gate denial",
			give:      func(e *Engine) { e.Verdict(alice, 6, 2000) },
			wantMsg:   "gate denied",
			wantLevel: slog.LevelInfo,
			wantKeys:  []string{"source", "proto", "port", "verdict", "suppressed_before"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := &logRecorder{}
			e := NewEngine(Config{Clock: clock.Now, Log: slog.New(logs)}, p.trust(t))
			tt.give(e)
			if len(logs.records) != 1 {
				t.Fatalf("%d log records, want 1", len(logs.records))
			}
			r := logs.records[0]
			if r.Message != tt.wantMsg || r.Level != tt.wantLevel {
				t.Errorf("record %q at %v, want %q at %v", r.Message, r.Level, tt.wantMsg, tt.wantLevel)
			}
			var keys []string
			r.Attrs(func(a slog.Attr) bool {
				keys = append(keys, a.Key)
				if want, ok := logKinds[a.Key]; !ok || a.Value.Kind() != want {
					t.Errorf("%s is a %v, want %v", a.Key, a.Value.Kind(), want)
				}
				return true
			})
			if diff := cmp.Diff(tt.wantKeys, keys); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEngineLogsNothingBelowItsLevel(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}))
	e := NewEngine(Config{Clock: clock.Now, Log: log}, p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now()))
	e.Knock(alice, make([]byte, 600))
	e.Verdict(netip.MustParseAddr("198.18.0.3"), 6, 2000)
	if out.Len() != 0 {
		t.Errorf("logged below the logger's level:\n%s", out.String())
	}
}

// TestEngineReconfigure checks that a reload's policy and open duration
// apply to the packets and knocks that follow, and that a live grant keeps
// its expiry.
func TestEngineReconfigure(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,tcp/3000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now, OpenDuration: 10 * time.Second, Policy: PolicyDrop}, p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	other := netip.MustParseAddr("198.18.0.3")
	if d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	if v := e.Verdict(other, 6, 2000); v != Drop {
		t.Fatalf("under drop: %v, want drop", v)
	}

	e.Reconfigure(PolicyReject, time.Minute)
	if got := e.Policy(); got != PolicyReject {
		t.Errorf("Policy() = %v, want reject", got)
	}
	if v := e.Verdict(other, 6, 2000); v != Reject {
		t.Errorf("after Reconfigure(reject): %v, want reject", v)
	}
	clock.Advance(time.Second)
	if d := e.Knock(alice, p.seal(t, "alice", knock.TCP, 3000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	clock.Advance(30 * time.Second)
	if v := e.Verdict(alice, 6, 2000); v != Reject {
		t.Errorf("grant made under 10 s, 31 s later: %v, want reject (expired)", v)
	}
	if v := e.Verdict(alice, 6, 3000); v != Accept {
		t.Errorf("grant made under 1 min, 30 s later: %v, want accept", v)
	}

	e.Reconfigure(PolicyNone, 0)
	if got := e.OpenDuration(); got != 15*time.Second {
		t.Errorf("OpenDuration() after Reconfigure(0) = %v, want the 15 s default", got)
	}
	if v := e.Verdict(other, 6, 2000); v != Accept {
		t.Errorf("under none: %v, want accept", v)
	}
}
