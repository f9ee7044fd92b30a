package gate

import (
	"crypto/rand"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// mutate returns a copy of datagram with its first ciphertext block
// replaced by random bytes: another datagram, with the same ephemeral key.
func mutate(datagram []byte) []byte {
	out := append([]byte(nil), datagram...)
	rand.Read(out[4:20])
	return out
}

// TestEngineMutatedCopiesShareOneECDH: copies of a captured knock whose
// ciphertext was altered are distinct datagrams (no outcome is cached for
// them) but share the ephemeral key: after the first, each is decided
// without an ECDH, exactly as the uncached Decide decides it.
func TestEngineMutatedCopiesShareOneECDH(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)
	captured := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())
	const copies = 50
	for i := range copies {
		data := mutate(captured)
		src := netip.AddrFrom4([4]byte{198, 19, 0, byte(i)})
		d := e.Knock(src, data)
		want := Decide(Input{Datagram: data, Source: src, Now: clock.Now()}, trust, nil)
		if d.Reason != want.Reason || fmt.Sprint(d.Err) != fmt.Sprint(want.Err) || d.Granted() {
			t.Fatalf("copy %d: %v (%v), uncached %v (%v)", i, d.Reason, d.Err, want.Reason, want.Err)
		}
	}
	s := e.Snapshot()
	if s.SecretHits != copies-1 || s.OutcomeHits != 0 {
		t.Errorf("secret hits %d, outcome hits %d; want %d and 0", s.SecretHits, s.OutcomeHits, copies-1)
	}
	if n := e.secrets.len(); n != 1 {
		t.Errorf("%d secrets remembered, want 1", n)
	}
	// The genuine datagram still opens and is granted to its source.
	if d := e.Knock(netip.MustParseAddr("198.18.0.2"), captured); !d.Granted() {
		t.Errorf("the genuine knock after its mutated copies: %v %v", d.Reason, d.Err)
	}
}

// TestSharedSecretsBound: the cache holds at most its bound, and a secret
// belongs to the server key it was made with.
func TestSharedSecretsBound(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	other := newTestPKI(t, nil)
	c := newSharedSecrets(4)
	for i := range 10 {
		data := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", time.Now())
		computeOutcome(data, p.trust(t), false, time.Now(), time.Now(), c)
		if n := c.len(); n > 4 {
			t.Fatalf("after %d datagrams the cache holds %d, bound 4", i+1, n)
		}
	}
	data := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", time.Now())
	computeOutcome(data, p.trust(t), false, time.Now(), time.Now(), c)
	hits := c.hits.Load()
	o := computeOutcome(data, other.trust(t), false, time.Now(), time.Now(), c)
	if c.hits.Load() != hits {
		t.Error("a secret made with one server key was used for another")
	}
	if o.knock != nil {
		t.Error("a knock for one server opened with another's key")
	}
}

// BenchmarkKnockMutatedCopy is what an altered copy of a captured knock
// costs the engine once its ephemeral key is known: no ECDH.
func BenchmarkKnockMutatedCopy(b *testing.B) {
	p := newTestPKI(b, map[string]string{"alice": "tcp/2000"})
	e := NewEngine(Config{}, p.trust(b))
	captured := p.seal(b, "alice", packet.TCP, 2000, "198.18.0.2", time.Now())
	src := netip.MustParseAddr("198.19.0.1")
	e.Knock(src, captured)
	b.ReportAllocs()
	for b.Loop() {
		e.Knock(src, mutate(captured)) // a new datagram every time
	}
}
