package gate

import (
	"crypto/ecdh"
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"sknock/knock"
	"sknock/packet"
)

// TestEngineReplayedCopiesCostOneHash: copies of one well-formed knock
// from many sources (a spoofed flood replaying a capture) cost one hash
// each after the first: the first is refused as a source mismatch, as
// the uncached Decide refuses it, and remembered, so the rest are
// replays. A copy from the address the knock names is a replay too: the
// gatekeeper cannot tell a racing copy from a knock whose address
// discovery was forged, so a knock once refused for its source is never
// granted (its client knocks again). Later copies are refused by their
// timestamp.
func TestEngineReplayedCopiesCostOneHash(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)
	data := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())

	const copies = 200
	for i := range copies {
		src := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		d := e.Knock(src, data)
		if i == 0 {
			want := Decide(Input{Datagram: data, Source: src, Now: clock.Now()}, trust, nil)
			if d.Reason != ReasonSourceMismatch || d.Reason != want.Reason || d.Err.Error() != want.Err.Error() {
				t.Fatalf("copy %d from %s: %v (%v); uncached Decide: %v (%v); want source_mismatch", i, src, d.Reason, d.Err, want.Reason, want.Err)
			}
			if d.Client == nil || d.Knock == nil || d.Client.Subject != want.Client.Subject {
				t.Fatalf("copy %d: decision lacks the knock or client: %+v", i, d)
			}
			continue
		}
		if d.Reason != ReasonReplay {
			t.Fatalf("copy %d from %s: %v (%v), want replay", i, src, d.Reason, d.Err)
		}
	}
	if hits := e.Snapshot().OutcomeHits; hits != 0 {
		t.Errorf("outcome cache hits = %d, want 0 (every copy after the first is a replay, refused before)", hits)
	}

	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), data); d.Reason != ReasonReplay {
		t.Fatalf("the knock from the address it names, after it was refused from another: %v %v, want replay", d.Reason, d.Err)
	}
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Fatalf("the client's next knock: %v %v, want a grant", d.Reason, d.Err)
	}

	// Past the window, a copy (from a source never seen) is refused by its
	// timestamp, whether or not its outcome is still cached.
	clock.Advance(8 * time.Second)
	if d := e.Knock(netip.MustParseAddr("198.18.9.9"), data); d.Reason != ReasonStaleTimestamp {
		t.Errorf("a copy 8 s later: %v, want stale_timestamp", d.Reason)
	}
	clock.Advance(time.Minute)
	if d := e.Knock(netip.MustParseAddr("198.18.9.10"), data); d.Reason != ReasonStaleTimestamp {
		t.Errorf("a copy a minute later (outcome expired): %v, want stale_timestamp", d.Reason)
	}
}

// TestEngineOutcomeNeverOutlivesTrust: a cached outcome belongs to the
// trust state it was made under. After a reload that revokes the
// certificate, a copy of a datagram whose outcome was cached is refused
// as revoked, not decided from the old outcome.
func TestEngineOutcomeNeverOutlivesTrust(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now}, p.trust(t))
	data := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())
	// A copy from elsewhere, decided through the outcome cache but not
	// remembered (Engine.Knock would remember it as a source mismatch).
	if d := decide(Input{Datagram: data, Source: netip.MustParseAddr("198.19.0.1"), Now: clock.Now()}, e.Trust(), nil, e.outcomes, e.secrets); d.Reason != ReasonSourceMismatch {
		t.Fatalf("spoofed copy: %v, want source_mismatch", d.Reason)
	}
	p.Revoke(t, "alice")
	e.SetTrust(p.trust(t))
	if n := e.outcomes.len(); n != 0 {
		t.Errorf("%d outcomes kept across the reload, want 0 (they hold the old trust state)", n)
	}
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), data); d.Reason != ReasonRevoked {
		t.Errorf("after the revoking reload: %v (%v), want revoked", d.Reason, d.Err)
	}
}

// TestEngineCachedRefusalsMatchDecide: undecryptable, malformed and
// untrusted datagrams, decided twice (the second time from the cache),
// get the uncached Decide's reason and error both times, and an IPv6
// copy of an IPv4 outcome is not served from it.
func TestEngineCachedRefusalsMatchDecide(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	foreign := newTestPKI(t, map[string]string{"mallory": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)

	garbage := make([]byte, 700)
	garbage[0], garbage[1] = knock.ProtocolID, knock.VersionMajor
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ct := (700 - 4 - knock.PublicKeySize) / 16 * 16
	garbage = garbage[:4+ct+knock.PublicKeySize]
	rand.Read(garbage[4 : 4+ct])
	copy(garbage[4+ct:], eph.PublicKey().Bytes())

	// mallory's knock, sealed to this server but from a foreign CA.
	untrusted := foreign.Issued(t, "mallory").Seal(t, p.ServerKey, packet.TCP, 2000, netip.MustParseAddr("198.18.0.3"), clock.Now())

	for name, data := range map[string][]byte{"garbage": garbage, "untrusted": untrusted} {
		for _, src := range []string{"198.18.0.3", "198.18.0.4", "fd00:5e::3"} {
			a := netip.MustParseAddr(src)
			d := e.Knock(a, data)
			want := Decide(Input{Datagram: data, Source: a, Now: clock.Now()}, trust, nil)
			if d.Reason != want.Reason || fmt.Sprint(d.Err) != fmt.Sprint(want.Err) || d.Granted() {
				t.Errorf("%s from %s: %v (%v), uncached %v (%v)", name, src, d.Reason, d.Err, want.Reason, want.Err)
			}
		}
	}
	// Two hits each (the second IPv4 source); IPv6 is a miss.
	if hits := e.Snapshot().OutcomeHits; hits != 2 {
		t.Errorf("outcome cache hits = %d, want 2", hits)
	}
}

// TestOutcomeCacheBound: the cache never holds more than its bound; the
// oldest entries go first.
func TestOutcomeCacheBound(t *testing.T) {
	c := newOutcomeCache(8)
	now := time.Now()
	trust := &Trust{}
	for i := range 20 {
		c.put(ReplayKey{byte(i)}, &outcome{trust: trust, expires: now.Add(time.Minute)})
		if n := c.len(); n > 8 {
			t.Fatalf("after %d puts the cache holds %d, bound 8", i+1, n)
		}
	}
	if c.get(ReplayKey{0}, trust, false, now) != nil || c.get(ReplayKey{19}, trust, false, now) == nil {
		t.Error("want the oldest entry gone and the newest kept")
	}
	if c.get(ReplayKey{19}, trust, false, now.Add(time.Minute)) != nil {
		t.Error("an expired outcome was served")
	}
	if c.get(ReplayKey{19}, &Trust{}, false, now) != nil {
		t.Error("an outcome of another trust state was served")
	}
}

// BenchmarkKnockReplayedCopy is what a copy of a datagram seen before
// costs the engine (a spoofed flood replaying one capture): a hash and a
// cache lookup, next to BenchmarkKnockFirstCopy's full decision.
func BenchmarkKnockReplayedCopy(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	e := NewEngine(Config{}, p.trust(b))
	data := p.seal(b, "alice", packet.TCP, 2000, "198.18.0.2", time.Now())
	src := netip.MustParseAddr("198.19.0.1")
	e.Knock(src, data)
	b.ReportAllocs()
	for b.Loop() {
		if d := e.Knock(src, data); d.Reason != ReasonSourceMismatch {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkKnockFirstCopy: the same datagram, never cached (a new trust
// state each time would cost more; the cache is bypassed instead).
func BenchmarkKnockFirstCopy(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	trust := p.trust(b)
	data := p.seal(b, "alice", packet.TCP, 2000, "198.18.0.2", time.Now())
	src := netip.MustParseAddr("198.19.0.1")
	b.ReportAllocs()
	for b.Loop() {
		if d := decide(Input{Datagram: data, Source: src, Now: time.Now()}, trust, nil, nil, nil); d.Reason != ReasonSourceMismatch {
			b.Fatal(d.Reason)
		}
	}
}

// BenchmarkECDH is one P-256 ECDH with a fixed server key: its rate is
// this host's ECDH operations per second per core, the unit of the
// fresh-key flood (docs/performance.md).
func BenchmarkECDH(b *testing.B) {
	server, _ := ecdh.P256().GenerateKey(rand.Reader)
	eph, _ := ecdh.P256().GenerateKey(rand.Reader)
	peer := eph.PublicKey()
	for b.Loop() {
		if _, err := server.ECDH(peer); err != nil {
			b.Fatal(err)
		}
	}
}
