package gate

import (
	"bytes"
	"crypto/ecdh"
	"crypto/x509"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/knock"
	"sknock/packet"
	"sknock/pki"
)

// vectorClockV2 is the time every v2 vector knock was sealed at
// (vectors/v2/README.md): the certificates, the CRL and the timestamps
// are all judged at it.
var vectorClockV2 = time.UnixMilli(1796083200000)

// countingKey is a server key that counts its ECDHs.
type countingKey struct {
	*ecdh.PrivateKey
	n atomic.Int64
}

func (k *countingKey) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	k.n.Add(1)
	return k.PrivateKey.ECDH(peer)
}

// vectorTrustV2 is vectorTrust whose v2 opener counts its ECDHs.
func vectorTrustV2(t testing.TB) (*Trust, *countingKey) {
	t.Helper()
	trust := vectorTrust(t)
	key := &countingKey{PrivateKey: trust.ServerKey}
	server, err := knock.NewOpener(serverSPKI(t), key)
	if err != nil {
		t.Fatal(err)
	}
	trust.Opener = server
	return trust, key
}

// serverSPKI is the vectors' server certificate's SubjectPublicKeyInfo.
func serverSPKI(t testing.TB) []byte {
	t.Helper()
	c, err := x509.ParseCertificate(readVector(t, "server.der"))
	if err != nil {
		t.Fatal(err)
	}
	return c.RawSubjectPublicKeyInfo
}

func v2Input(data []byte, src string) Input {
	return Input{Datagram: data, Source: netip.MustParseAddr(src), Now: vectorClockV2}
}

func TestDecideV2Vectors(t *testing.T) {
	a4, a6, b4 := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00:5e::2"), netip.MustParseAddr("198.18.0.3")
	tests := []struct {
		name       string
		give       string
		src        string
		want       Reason
		wantGrants []Grant
		wantECDH   int64
	}{
		{"a tcp 2000 v4", "knock2-a-tcp2000-v4.bin", "198.18.0.2", ReasonNone, []Grant{{a4, packet.TCP, 2000}}, 1},
		{"a multi v4", "knock2-a-multi-v4.bin", "198.18.0.2", ReasonNone, []Grant{{a4, packet.TCP, 2000}, {a4, packet.TCP, 3000}, {a4, packet.UDP, 8000}}, 1},
		{"a tcp 3000 v6", "knock2-a-tcp3000-v6.bin", "fd00:5e::2", ReasonNone, []Grant{{a6, packet.TCP, 3000}}, 1},
		{"b tcp 22 v4", "knock2-b-tcp22-v4.bin", "198.18.0.3", ReasonNone, []Grant{{b4, packet.TCP, 22}}, 1},
		{"6.999 s ahead", "knock2-a-ts-ahead6999.bin", "198.18.0.2", ReasonNone, []Grant{{a4, packet.TCP, 2000}}, 1},
		{"7.001 s behind", "knock2-a-ts-behind7001.bin", "198.18.0.2", ReasonStaleTimestamp, nil, 1},
		{"b unauthorised", "knock2-b-tcp2000-unauthorized.bin", "198.18.0.3", ReasonNotAuthorized, nil, 1},
		{"partly unauthorised", "knock2-a-partly-unauthorized.bin", "198.18.0.2", ReasonNotAuthorized, nil, 1},
		{"revoked", "knock2-revoked-tcp2000.bin", "198.18.0.2", ReasonRevoked, nil, 1},
		{"no authorisation", "knock2-noauth-tcp2000.bin", "198.18.0.2", ReasonNotAuthorized, nil, 1},
		{"rogue CA", "knock2-rogue-tcp2000.bin", "198.18.0.2", ReasonUntrusted, nil, 1},
		{"bad mac1", "knock2-a-badmac.bin", "198.18.0.2", ReasonBadMAC1, nil, 0},
		{"other server", "knock2-a-otherserver.bin", "198.18.0.2", ReasonBadMAC1, nil, 0},
		{"source mismatch v4", "knock2-a-tcp2000-v4.bin", "198.18.0.9", ReasonSourceMismatch, nil, 1},
		{"source mismatch v6", "knock2-a-tcp3000-v6.bin", "fd00:5e::9", ReasonSourceMismatch, nil, 1},
		{"v4 knock over v6", "knock2-a-tcp2000-v4.bin", "fd00:5e::2", ReasonSourceMismatch, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trust, key := vectorTrustV2(t)
			d := Decide(v2Input(readVector(t, "v2/"+tt.give), tt.src), trust, NewReplayCache(0))
			if d.Reason != tt.want {
				t.Fatalf("Decide() reason = %v (%v), want %v", d.Reason, d.Err, tt.want)
			}
			if d.Version != 2 {
				t.Errorf("Version = %d, want 2", d.Version)
			}
			if d.Granted() {
				if !slices.Equal(tt.wantGrants, d.Grants) {
					t.Errorf("grants = %v, want %v", d.Grants, tt.wantGrants)
				}
			}
			if n := key.n.Load(); n != tt.wantECDH {
				t.Errorf("%d ECDHs, want %d", n, tt.wantECDH)
			}
		})
	}
}

// TestEngineV2Replay: a granted knock seen again is refused at step 3
// without an ECDH, and so is a knock refused for its source address that
// comes again from the right one.
func TestEngineV2Replay(t *testing.T) {
	tests := []struct {
		name      string
		firstFrom string
		want      Reason
	}{
		{"granted, then again", "198.18.0.2", ReasonNone},
		{"wrong source, then the right one", "198.18.0.9", ReasonSourceMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			trust, key := vectorTrustV2(t)
			clock := &fakeClock{now: vectorClockV2}
			e := NewEngine(Config{Clock: clock.Now}, trust)
			data := readVector(t, "v2/knock2-a-multi-v4.bin")
			if d := e.Knock(netip.MustParseAddr(tt.firstFrom), data); d.Reason != tt.want {
				t.Fatalf("first: %v (%v), want %v", d.Reason, d.Err, tt.want)
			}
			before := key.n.Load()
			d := e.Knock(netip.MustParseAddr("198.18.0.2"), data)
			if d.Reason != ReasonReplay {
				t.Fatalf("again: %v (%v), want replay", d.Reason, d.Err)
			}
			if n := key.n.Load() - before; n != 0 {
				t.Errorf("the replay cost %d ECDHs, want 0", n)
			}
		})
	}
}

func TestEngineV2GrantsEveryRequest(t *testing.T) {
	trust, _ := vectorTrustV2(t)
	clock := &fakeClock{now: vectorClockV2}
	e := NewEngine(Config{Clock: clock.Now, Protects: func(p packet.Proto, port uint16) bool { return port != 3000 }}, trust)
	src := netip.MustParseAddr("198.18.0.2")
	d := e.Knock(src, readVector(t, "v2/knock2-a-multi-v4.bin"))
	if !d.Granted() {
		t.Fatalf("denied: %v %v", d.Reason, d.Err)
	}
	if want := []Grant{{src, packet.TCP, 2000}, {src, packet.UDP, 8000}}; !slices.Equal(d.Grants, want) {
		t.Errorf("Decision.Grants = %v, want what was granted, %v", d.Grants, want)
	}
	for _, tt := range []struct {
		proto packet.Proto
		port  uint16
		want  bool
	}{{packet.TCP, 2000, true}, {packet.UDP, 8000, true}, {packet.TCP, 3000, false}, {packet.TCP, 22, false}} {
		if got := e.Grants().Allowed(src, tt.proto, tt.port, clock.Now()); got != tt.want {
			t.Errorf("%s/%d allowed = %v, want %v (tcp/3000 is not protected)", tt.proto, tt.port, got, tt.want)
		}
	}
}

func TestEngineRefusesProtocols(t *testing.T) {
	trust, key := vectorTrustV2(t)
	clock := &fakeClock{now: vectorClockV2}
	e := NewEngine(Config{Clock: clock.Now, Protocols: []int{1}}, trust)
	d := e.Knock(netip.MustParseAddr("198.18.0.2"), readVector(t, "v2/knock2-a-tcp2000-v4.bin"))
	if d.Reason != ReasonProtocolRefused || key.n.Load() != 0 {
		t.Errorf("v2 under protocols [1]: %v (%v), %d ECDHs; want protocol_refused, none", d.Reason, d.Err, key.n.Load())
	}
	e.SetProtocols([]int{2})
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), readVector(t, "knock-a-tcp2000-v4.bin")); d.Reason != ReasonProtocolRefused {
		t.Errorf("v1 under protocols [2]: %v, want protocol_refused", d.Reason)
	}
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), readVector(t, "v2/knock2-a-tcp2000-v4.bin")); !d.Granted() {
		t.Errorf("v2 under protocols [2]: %v (%v), want granted", d.Reason, d.Err)
	}
}

func TestDecideV2EveryChangedByteDenied(t *testing.T) {
	trust, key := vectorTrustV2(t)
	data := readVector(t, "v2/knock2-a-tcp2000-v4.bin")
	for i := range data {
		for _, flip := range []byte{0x01, 0x80} {
			mod := bytes.Clone(data)
			mod[i] ^= flip
			d := Decide(v2Input(mod, "198.18.0.2"), trust, nil)
			if d.Granted() {
				t.Fatalf("byte %d ^ %#x: granted", i, flip)
			}
		}
	}
	if n := key.n.Load(); n != 0 {
		t.Errorf("changed datagrams cost %d ECDHs, want 0 (mac1 covers every byte)", n)
	}
}

// TestDecideV2OutcomeAndSecretCaches: a copy of a datagram is decided
// alike from the outcome cache, and a datagram reusing an enc costs no
// second ECDH.
func TestDecideV2OutcomeAndSecretCaches(t *testing.T) {
	trust, key := vectorTrustV2(t)
	outcomes, secrets := newOutcomeCache(0), newSharedSecrets(0)
	data := readVector(t, "v2/knock2-b-tcp2000-unauthorized.bin")
	for range 3 {
		d := decide(v2Input(data, "198.18.0.3"), trust, nil, outcomes, secrets)
		if d.Reason != ReasonNotAuthorized {
			t.Fatalf("reason %v, want not_authorized", d.Reason)
		}
	}
	if n := key.n.Load(); n != 1 {
		t.Errorf("%d ECDHs for three copies, want 1", n)
	}
	if outcomes.hits.Load() != 2 {
		t.Errorf("%d outcome hits, want 2", outcomes.hits.Load())
	}
}

func BenchmarkDecideV2(b *testing.B) {
	trust := vectorTrust(b)
	data := readVector(b, "v2/knock2-a-tcp2000-v4.bin")
	in := v2Input(data, "198.18.0.2")
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(in, trust, nil); !d.Granted() {
			b.Fatal(d.Err)
		}
	}
}

func BenchmarkDecideV2BadMAC1(b *testing.B) {
	trust := vectorTrust(b)
	in := v2Input(readVector(b, "v2/knock2-a-badmac.bin"), "198.18.0.2")
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(in, trust, nil); d.Reason != ReasonBadMAC1 {
			b.Fatal(d.Err)
		}
	}
}

func TestKnockLane(t *testing.T) {
	trust, key := vectorTrustV2(t)
	tests := []struct {
		name       string
		give       []byte
		protocols  []int
		wantAtOnce bool
		wantFast   bool
	}{
		{"v2, mac1 right", readVector(t, "v2/knock2-a-tcp2000-v4.bin"), nil, false, true},
		{"v2, mac1 wrong", readVector(t, "v2/knock2-a-badmac.bin"), nil, true, false},
		{"v2 for another server", readVector(t, "v2/knock2-a-otherserver.bin"), nil, true, false},
		{"v2 too short", []byte("a\x02\x00\x00 short"), nil, true, false},
		{"v1", readVector(t, "knock-a-tcp2000-v4.bin"), nil, false, false},
		{"v1 refused", readVector(t, "knock-a-tcp2000-v4.bin"), []int{2}, true, false},
		{"v2 refused", readVector(t, "v2/knock2-a-tcp2000-v4.bin"), []int{1}, true, false},
		{"no knock", []byte("GET / HTTP/1.1"), nil, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewEngine(Config{Protocols: tt.protocols}, trust)
			atOnce, fast := e.KnockLane(tt.give)
			if atOnce != tt.wantAtOnce || fast != tt.wantFast {
				t.Errorf("KnockLane = %v, %v, want %v, %v", atOnce, fast, tt.wantAtOnce, tt.wantFast)
			}
			if n := testing.AllocsPerRun(50, func() { e.KnockLane(tt.give) }); n != 0 {
				t.Errorf("%v allocations, want 0", n)
			}
		})
	}
	if key.n.Load() != 0 {
		t.Errorf("KnockLane did %d ECDHs", key.n.Load())
	}
}

func TestParseProtocols(t *testing.T) {
	tests := []struct {
		give    []string
		want    []int
		wantErr bool
	}{
		{[]string{"1", "2"}, []int{1, 2}, false},
		{[]string{"2"}, []int{2}, false},
		{[]string{"1"}, []int{1}, false},
		{nil, nil, true},
		{[]string{"3"}, nil, true},
		{[]string{"2", "2"}, nil, true},
		{[]string{"v2"}, nil, true},
	}
	for _, tt := range tests {
		got, err := ParseProtocols(tt.give)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("ParseProtocols(%q) = %v, %v; want %v, error %v", tt.give, got, err, tt.want, tt.wantErr)
		}
	}
}

// BenchmarkDecideV2KnownClient is BenchmarkDecideKnownClient for a v2
// knock: mac1, HPKE open, chain (cached), signature.
func BenchmarkDecideV2KnownClient(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	trust := p.trust(b)
	now := time.Now()
	src := netip.MustParseAddr("198.18.0.2")
	data := p.SealV2(b, "alice", []knock.Request{{Proto: packet.TCP, Port: 2000}}, src, now)
	in := Input{Datagram: data, Source: src, Now: now}
	if d := Decide(in, trust, nil); !d.Granted() { // warms the chain cache
		b.Fatal(d.Reason, d.Err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(in, trust, nil); !d.Granted() {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkRefuseBadMAC1 is what the knock reader's receive goroutine
// spends on a v2 datagram whose mac1 is wrong: Engine.KnockLane, then
// Engine.KnockAtOnce (counted, refused as bad_mac1).
func BenchmarkRefuseBadMAC1(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	e := NewEngine(Config{}, p.trust(b))
	src := netip.MustParseAddr("198.18.0.2")
	data := p.SealV2(b, "alice", []knock.Request{{Proto: packet.TCP, Port: 2000}}, src, time.Now())
	data[len(data)-1] ^= 1
	b.ReportAllocs()
	for b.Loop() {
		if atOnce, _ := e.KnockLane(data); !atOnce {
			b.Fatal("not refused at once")
		}
		if d := e.KnockAtOnce(src, data); d.Reason != ReasonBadMAC1 {
			b.Fatal(d.Reason)
		}
	}
}

// TestRefusedAtOnceDoesNotAllocate: what the knock reader's receive
// goroutine decides at once (a wrong mac1, a refused version) allocates
// nothing, whatever the flood.
func TestRefusedAtOnceDoesNotAllocate(t *testing.T) {
	trust, _ := vectorTrustV2(t)
	e := NewEngine(Config{Clock: (&fakeClock{now: vectorClockV2}).Now, Protocols: []int{2}}, trust)
	src := netip.MustParseAddr("198.18.0.2")
	for _, give := range []string{"v2/knock2-a-badmac.bin", "knock-a-tcp2000-v4.bin"} {
		data := readVector(t, give)
		if n := testing.AllocsPerRun(100, func() { e.KnockLane(data); e.Knock(src, data) }); n != 0 {
			t.Errorf("%s: %v allocations, want 0", give, n)
		}
		if n := testing.AllocsPerRun(100, func() { e.KnockLane(data); e.KnockAtOnce(src, data) }); n != 0 {
			t.Errorf("%s at once: %v allocations, want 0", give, n)
		}
	}
}

// TestKnockAtOnceDecidesAsKnock: for whatever KnockLane sends to be
// decided at once, KnockAtOnce gives Knock's reason, and counts it.
func TestKnockAtOnceDecidesAsKnock(t *testing.T) {
	trust, key := vectorTrustV2(t)
	for _, tt := range []struct {
		give      []byte
		protocols []int
	}{
		{readVector(t, "v2/knock2-a-badmac.bin"), nil},
		{readVector(t, "v2/knock2-a-otherserver.bin"), nil},
		{readVector(t, "knock-a-tcp2000-v4.bin"), []int{2}},
		{readVector(t, "v2/knock2-a-tcp2000-v4.bin"), []int{1}},
		{[]byte("a\x02\x00\x00 too short"), nil},
		{[]byte("a\x03\x00\x00 some future version of a knock, long enough to be one"), nil},
	} {
		clock := &fakeClock{now: vectorClockV2}
		e := NewEngine(Config{Clock: clock.Now, Protocols: tt.protocols}, trust)
		if atOnce, _ := e.KnockLane(tt.give); !atOnce {
			t.Fatalf("%.12q: KnockLane does not decide it at once", tt.give)
		}
		want := e.Knock(netip.MustParseAddr("198.18.0.2"), tt.give).Reason
		got := e.KnockAtOnce(netip.MustParseAddr("198.18.0.2"), tt.give).Reason
		if got != want || e.Snapshot().Knocks[want.String()] != 2 {
			t.Errorf("%.12q: KnockAtOnce %v, Knock %v (counted %v)", tt.give, got, want, e.Snapshot().Knocks)
		}
	}
	if key.n.Load() != 0 {
		t.Errorf("%d ECDHs", key.n.Load())
	}
}

func TestRequestsString(t *testing.T) {
	got := RequestsString([]knock.Request{{Proto: packet.TCP, Port: 22}, {Proto: packet.UDP, Port: 8000}})
	if got != "tcp/22,udp/8000" {
		t.Errorf("RequestsString = %q, want tcp/22,udp/8000", got)
	}
}

// intermediateClient makes a PKI with an empty CRL and client dave of
// intermediate CA ops, which the host does not list; it returns dave,
// the intermediate and the server's v2 target.
func intermediateClient(t *testing.T) (*testPKI, *testpki.Client, []*x509.Certificate, *knock.Target) {
	t.Helper()
	p := newTestPKI(t, nil)
	p.WriteCRL(t)
	dave, sub := p.Intermediate(t, "ops", "dave")
	cas, err := pki.LoadCertificates(filepath.Join(sub, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	target, err := knock.NewTarget(p.Server.Cert.RawSubjectPublicKeyInfo)
	if err != nil {
		t.Fatal(err)
	}
	return p, dave, cas, target
}

// TestDecideV2ChainInKnock: a client of an intermediate CA that the host
// does not list is granted when its knock carries the intermediate, and
// refused without it, or once the root's CRL revokes the intermediate.
func TestDecideV2ChainInKnock(t *testing.T) {
	p, dave, cas, target := intermediateClient(t)
	now := time.Now()
	src := netip.MustParseAddr("198.18.0.2")
	seal := func(chain ...[]byte) []byte {
		k := &knock.KnockV2{TimestampMillis: uint64(now.UnixMilli()), ClientIP: src,
			Requests: []knock.Request{{Proto: packet.TCP, Port: 2000}}, Chain: chain}
		data, err := knock.SealV2(k, dave.Key, target, nil)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	decideWith := func(trust *Trust, data []byte) Reason {
		return Decide(Input{Datagram: data, Source: src, Now: now}, trust, nil).Reason
	}
	trust := p.trust(t)
	if r := decideWith(trust, seal(dave.Cert.Raw, cas[0].Raw)); r != ReasonNone {
		t.Errorf("client, intermediate: %v, want granted", r)
	}
	if r := decideWith(trust, seal(dave.Cert.Raw)); r != ReasonUntrusted {
		t.Errorf("client alone: %v, want untrusted_certificate", r)
	}
	if err := pki.Revoke(p.Dir, "ops"); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
	if r := decideWith(p.trust(t), seal(dave.Cert.Raw, cas[0].Raw)); r != ReasonRevoked {
		t.Errorf("intermediate revoked by the root's CRL: %v, want revoked", r)
	}
}

// TestRejudgeV2ByItsChain: a trust change verifies a v2 client again by
// the chain its knock carried: the share of a client whose intermediate
// the host knows only from the knock survives a reload that changes
// nothing for it, and ends once the root's CRL revokes the intermediate.
func TestRejudgeV2ByItsChain(t *testing.T) {
	p, dave, cas, target := intermediateClient(t)
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	src := netip.MustParseAddr("198.18.0.2")
	k := &knock.KnockV2{TimestampMillis: uint64(clock.Now().UnixMilli()), ClientIP: src,
		Requests: []knock.Request{{Proto: packet.TCP, Port: 2000}}, Chain: [][]byte{dave.Cert.Raw, cas[0].Raw}}
	data, err := knock.SealV2(k, dave.Key, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, OpenDuration: time.Minute}, p.trust(t))
	if d := e.Knock(src, data); !d.Granted() {
		t.Fatalf("knock: %v %v", d.Reason, d.Err)
	}
	if ended := e.SetTrust(p.trust(t)); len(ended.Grants) != 0 {
		t.Errorf("a reload that changed nothing ended %+v", ended.Grants)
	}
	if err := pki.Revoke(p.Dir, "ops"); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
	if ended := e.SetTrust(p.trust(t)); len(ended.Grants) != 1 || !errors.Is(ended.Grants[0].Why, pki.ErrRevoked) {
		t.Errorf("intermediate revoked: ended %+v, want dave's share, revoked", ended.Grants)
	}
	if e.Grants().Allowed(src, packet.TCP, 2000, clock.Now()) {
		t.Error("dave's grant outlived the revocation of his intermediate")
	}
}
