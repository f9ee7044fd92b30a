package gate

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"net/netip"
	"sync"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/packet"
)

// testPKI is a CA made with package pki in a temporary directory, a server
// bundle, and client bundles by name (testpki with its defaults).
type testPKI struct{ *testpki.PKI }

func newTestPKI(t testing.TB, clients map[string]string) *testPKI {
	t.Helper()
	return &testPKI{testpki.New(t, &testpki.Options{Clients: clients})}
}

// trust builds the trust state, with the CA's current CRL if one exists.
func (p *testPKI) trust(t testing.TB) *Trust {
	t.Helper()
	trust, err := NewTrust(p.Server, p.Server.CAs, p.LoadCRL(t), 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

// seal makes a knock from the named client.
func (p *testPKI) seal(t testing.TB, client string, proto packet.Proto, port uint16, ip string, at time.Time) []byte {
	t.Helper()
	return p.Seal(t, client, proto, port, netip.MustParseAddr(ip), at)
}

func TestEngineGrantLifecycle(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,udp/8000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now, OpenDuration: 15 * time.Second, Policy: PolicyReject}, p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	other := netip.MustParseAddr("198.18.0.3")

	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Reject {
		t.Fatalf("before knock: %v, want reject", v)
	}
	d := e.Knock(alice, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now()))
	if !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	tests := []struct {
		name    string
		src     netip.Addr
		ipProto packet.Proto
		port    uint16
		want    packet.Verdict
	}{
		{"granted port", alice, 6, 2000, packet.Accept},
		{"same port over udp", alice, 17, 2000, packet.Reject},
		{"other port", alice, 6, 2001, packet.Reject},
		{"other source", other, 6, 2000, packet.Reject},
		{"v4-mapped form of the source", netip.MustParseAddr("::ffff:198.18.0.2"), 6, 2000, packet.Drop},
		{"unknown protocol", alice, 1, 2000, packet.Drop},
	}
	for _, tt := range tests {
		if got := verdictOf(e, tt.src, tt.ipProto, tt.port); got != tt.want {
			t.Errorf("%s: Verdict = %v, want %v", tt.name, got, tt.want)
		}
	}

	clock.Advance(14 * time.Second)
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Accept {
		t.Fatalf("at 14s: %v, want accept", v)
	}
	// A new knock extends the grant.
	if d := e.Knock(alice, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("second knock: %v %v", d.Reason, d.Err)
	}
	clock.Advance(14 * time.Second)
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Accept {
		t.Fatalf("extended grant at 28s: %v, want accept", v)
	}
	clock.Advance(2 * time.Second)
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Reject {
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
	data := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())
	if d := e.Knock(src, data); !d.Granted() {
		t.Fatalf("first: %v", d.Reason)
	}
	clock.Advance(3 * time.Second)
	if d := e.Knock(src, data); d.Reason != ReasonReplay {
		t.Fatalf("replay: %v, want replay", d.Reason)
	}
	// Concurrent copies of one fresh datagram yield one grant.
	fresh := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())
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
	if s.Knocks["replay"] != 8 || s.Knocks["granted"] != 2 {
		t.Errorf("counters = %v, want 8 replays, 2 grants", s.Knocks)
	}
}

func TestEngineRevocationOnReloadKeepsGrants(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000", "bob": "tcp/2000"})
	clock := &fakeClock{now: time.Now()}
	e := NewEngine(Config{Clock: clock.Now}, p.trust(t))
	bob := netip.MustParseAddr("198.18.0.3")
	if d := e.Knock(bob, p.seal(t, "bob", packet.TCP, 2000, "198.18.0.3", clock.Now())); !d.Granted() {
		t.Fatalf("bob: %v", d.Reason)
	}
	p.Revoke(t, "alice")
	e.SetTrust(p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	if d := e.Knock(alice, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); d.Reason != ReasonRevoked {
		t.Fatalf("revoked alice: %v, want revoked", d.Reason)
	}
	if v := verdictOf(e, bob, packet.TCP, 2000); v != packet.Accept {
		t.Errorf("bob's grant lost on reload: %v", v)
	}
}

func TestEnginePolicies(t *testing.T) {
	src := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		give Policy
		want packet.Verdict
	}{
		{PolicyDrop, packet.Drop},
		{PolicyReject, packet.Reject},
		{PolicyNone, packet.Accept},
	}
	for _, tt := range tests {
		t.Run(tt.give.String(), func(t *testing.T) {
			e := NewEngine(Config{Policy: tt.give}, nil)
			if got := verdictOf(e, src, packet.TCP, 2000); got != tt.want {
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
		if g.Add(Grant{Source: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), Proto: packet.TCP, Port: 1}, CertID{}, until) == nil {
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
	e := NewEngine(Config{Policy: PolicyDrop}, nil)
	if _, err := e.NewHolder(HolderConfig{Settle: func(*HeldPacket, packet.Verdict) {}}); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("198.18.0.2")
	for _, cert := range []CertID{testCert(1), testCert(2)} { // a shared address
		e.Grants().Add(Grant{Source: src, Proto: packet.TCP, Port: 2000}, cert, time.Now().Add(time.Hour))
	}
	granted := header(src, packet.TCP, 2000)
	other := header(netip.MustParseAddr("fd00:5e::7"), packet.TCP, 2000)
	pending := header(netip.MustParseAddr("198.18.0.9"), packet.UDP, 8000)
	e.KnockQueued(pending.Src)
	now := time.Now()
	e.ConnsCapacity() // the connection record, made at the first grant
	allocs := testing.AllocsPerRun(1000, func() {
		granted.SrcPort++ // a new connection, recorded, every time
		e.Verdict(&granted, now)
		e.Verdict(&other, now)
		e.Verdict(&pending, now)
	})
	if allocs != 0 {
		t.Errorf("Verdict allocates %.1f times per three calls, want 0", allocs)
	}
}

func BenchmarkDecideKnownClient(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	trust := p.trust(b)
	now := time.Now()
	data := p.seal(b, "alice", packet.TCP, 2000, "198.18.0.2", now)
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
	e.Grants().Add(Grant{Source: src, Proto: packet.TCP, Port: 2000}, CertID{}, time.Now().Add(time.Hour))
	b.ReportAllocs()
	h := header(src, packet.TCP, 2000)
	now := time.Now()
	for b.Loop() {
		e.Verdict(&h, now)
	}
}

func TestEngineRefusesKnocksSealedBeforeItsReplayMemory(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	src := netip.MustParseAddr("198.18.0.2")
	// Sealed and granted by a previous sknockd 3 s ago, then captured: a
	// fresh engine has no memory of it, so it must not grant it again.
	old := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(-3*time.Second))
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)
	if d := e.Knock(src, old); d.Reason != ReasonReplay {
		t.Fatalf("knock sealed before start: %v, want replay", d.Reason)
	}
	fresh := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())
	if d := e.Knock(src, fresh); !d.Granted() {
		t.Fatalf("fresh knock: %v", d.Reason)
	}

	// A reload that widens the tolerance starts the memory afresh: a knock
	// granted under the narrow window may be forgotten before the wide one
	// ends.
	clock.Advance(20 * time.Second)
	recent := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(-time.Second))
	wide := *trust
	wide.Tolerance = 60 * time.Second
	e.SetTrust(&wide)
	if d := e.Knock(src, recent); d.Reason != ReasonReplay {
		t.Fatalf("knock sealed before the widening: %v, want replay", d.Reason)
	}
	// Narrowing it again keeps the floor where it is.
	e.SetTrust(trust)
	if d := e.Knock(src, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("fresh knock after reloads: %v", d.Reason)
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
	if d := e.Knock(alice, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	if v := verdictOf(e, other, packet.TCP, 2000); v != packet.Drop {
		t.Fatalf("under drop: %v, want drop", v)
	}

	e.Reconfigure(PolicyReject, time.Minute)
	if got := e.Policy(); got != PolicyReject {
		t.Errorf("Policy() = %v, want reject", got)
	}
	if v := verdictOf(e, other, packet.TCP, 2000); v != packet.Reject {
		t.Errorf("after Reconfigure(reject): %v, want reject", v)
	}
	clock.Advance(time.Second)
	if d := e.Knock(alice, p.seal(t, "alice", packet.TCP, 3000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
	}
	clock.Advance(30 * time.Second)
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Reject {
		t.Errorf("grant made under 10 s, 31 s later: %v, want reject (expired)", v)
	}
	if v := verdictOf(e, alice, packet.TCP, 3000); v != packet.Accept {
		t.Errorf("grant made under 1 min, 30 s later: %v, want accept", v)
	}

	e.Reconfigure(PolicyNone, 0)
	if got := e.OpenDuration(); got != 15*time.Second {
		t.Errorf("OpenDuration() after Reconfigure(0) = %v, want the 15 s default", got)
	}
	if v := verdictOf(e, other, packet.TCP, 2000); v != packet.Accept {
		t.Errorf("under none: %v, want accept", v)
	}
}

// header returns the decoded header of a packet from src to proto/port.
func header(src netip.Addr, proto packet.Proto, port uint16) packet.Header {
	dst := netip.MustParseAddr("198.18.0.1")
	if src.Is6() {
		dst = netip.MustParseAddr("fd00:5e::1")
	}
	return packet.Header{Family: 4, Proto: proto, Src: src, Dst: dst, SrcPort: 40000, DstPort: port}
}

// verdictOf asks e for the verdict of a packet from src to proto/port at
// e's time.
func verdictOf(e *Engine, src netip.Addr, proto packet.Proto, port uint16) packet.Verdict {
	h := header(src, proto, port)
	v, _ := e.Verdict(&h, e.Now())
	return v
}
