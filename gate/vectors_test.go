package gate

import (
	"bytes"
	"crypto/elliptic"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/internal/testenv"
	"sknock/packet"
	"sknock/pki"
)

// vector is the path of the interop vector file name (see
// testenv.VectorsDir: skipped when the vectors are absent).
func vector(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testenv.VectorsDir(t), name)
}

// vectorClock is the time every vector knock was sealed at.
var vectorClock = time.Unix(1767225600, 0)

// vectorTrust loads the vectors' server key, CA and CRL.
func vectorTrust(t testing.TB) *Trust {
	t.Helper()
	b, err := pki.LoadBundle(vector(t, "server.pfx"), "portknocking")
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.LoadCertificates(vector(t, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := pki.LoadCRL(vector(t, "ca.crl"), cas)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := NewTrust(b, cas, crl, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(vector(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// vectorInput is a vector knock arriving at the vectors' clock. The
// vector certificates are issued when the vectors are made, which may be
// after the knocks' timestamp, so certificates are judged at the real
// time (as `sknock inspect --at` does).
func vectorInput(data []byte, src string) Input {
	return Input{Datagram: data, Source: netip.MustParseAddr(src), Now: vectorClock, CertTime: time.Now()}
}

func TestDecideVectors(t *testing.T) {
	trust := vectorTrust(t)
	tests := []struct {
		name      string
		give      string
		src       string
		want      Reason
		wantGrant Grant
	}{
		{"a tcp 2000 v4", "knock-a-tcp2000-v4.bin", "198.18.0.2", ReasonNone, Grant{netip.MustParseAddr("198.18.0.2"), packet.TCP, 2000}},
		{"a udp 8000 v4", "knock-a-udp8000-v4.bin", "198.18.0.2", ReasonNone, Grant{netip.MustParseAddr("198.18.0.2"), packet.UDP, 8000}},
		{"a tcp 3000 v6", "knock-a-tcp3000-v6.bin", "fd00:5e::2", ReasonNone, Grant{netip.MustParseAddr("fd00:5e::2"), packet.TCP, 3000}},
		{"b tcp 22 v4", "knock-b-tcp22-v4.bin", "198.18.0.3", ReasonNone, Grant{netip.MustParseAddr("198.18.0.3"), packet.TCP, 22}},
		{"b unauthorised", "knock-b-tcp2000-unauthorized.bin", "198.18.0.3", ReasonNotAuthorized, Grant{}},
		{"revoked", "knock-revoked-tcp2000.bin", "198.18.0.4", ReasonRevoked, Grant{}},
		{"no authorisation", "knock-noauth-tcp2000.bin", "198.18.0.5", ReasonNotAuthorized, Grant{}},
		{"rogue CA", "knock-rogue-tcp2000.bin", "198.18.0.6", ReasonUntrusted, Grant{}},
		{"source mismatch v4", "knock-a-tcp2000-v4.bin", "198.18.0.9", ReasonSourceMismatch, Grant{}},
		{"source mismatch v6", "knock-a-tcp3000-v6.bin", "fd00:5e::9", ReasonSourceMismatch, Grant{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(vectorInput(readVector(t, tt.give), tt.src), trust, NewReplayCache(0))
			if d.Reason != tt.want {
				t.Fatalf("Decide() reason = %v (%v), want %v", d.Reason, d.Err, tt.want)
			}
			if d.Granted() && d.Grant != tt.wantGrant {
				t.Errorf("grant = %+v, want %+v", d.Grant, tt.wantGrant)
			}
		})
	}
}

func TestDecideTimestampWindow(t *testing.T) {
	trust := vectorTrust(t)
	data := readVector(t, "knock-a-tcp2000-v4.bin")
	tests := []struct {
		name   string
		offset time.Duration
		want   Reason
	}{
		{"on time", 0, ReasonNone},
		{"7s late is in", 7 * time.Second, ReasonNone},
		{"7s early is in", -7 * time.Second, ReasonNone},
		{"8s late is stale", 8 * time.Second, ReasonStaleTimestamp},
		{"8s early is future", -8 * time.Second, ReasonFutureTimestamp},
		{"a day late", 24 * time.Hour, ReasonStaleTimestamp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := vectorInput(data, "198.18.0.2")
			in.Now = vectorClock.Add(tt.offset)
			if d := Decide(in, trust, nil); d.Reason != tt.want {
				t.Errorf("reason = %v (%v), want %v", d.Reason, d.Err, tt.want)
			}
		})
	}
}

func TestDecideEveryChangedByteDenied(t *testing.T) {
	trust := vectorTrust(t)
	data := readVector(t, "knock-a-tcp2000-v4.bin")
	for i := range data {
		for _, flip := range []byte{0x01, 0x80} {
			mod := bytes.Clone(data)
			mod[i] ^= flip
			if d := Decide(vectorInput(mod, "198.18.0.2"), trust, nil); d.Granted() {
				t.Fatalf("byte %d ^ %#x: granted", i, flip)
			}
		}
	}
}

func TestEngineReplayAndGrant(t *testing.T) {
	clock := &fakeClock{now: vectorClock}
	e := NewEngine(Config{Clock: clock.Now, OpenDuration: 15 * time.Second}, vectorTrust(t))
	data := readVector(t, "knock-a-tcp2000-v4.bin")
	src := netip.MustParseAddr("198.18.0.2")
	// Certificates are judged at the real time in vector tests; the
	// engine uses one clock, so move it to a time the certificates hold
	// and re-seal? No: the vectors' certificates start after the knocks'
	// timestamp, so the engine test uses knocks it seals itself (see
	// engine_test.go). Here only the replay cache's first-wins step is
	// exercised through Decide and ReplayCache.
	cache := NewReplayCache(0)
	d := Decide(vectorInput(data, src.String()), e.Trust(), cache)
	if !d.Granted() {
		t.Fatalf("first: %v %v", d.Reason, d.Err)
	}
	if got := cache.Add(d.ReplayKey, ReplayExpiry(d.Knock.Time(), vectorClock, 7*time.Second), vectorClock); got != Added {
		t.Fatalf("Add = %v, want Added", got)
	}
	d = Decide(vectorInput(data, src.String()), e.Trust(), cache)
	if d.Reason != ReasonReplay {
		t.Fatalf("second: reason %v, want replay", d.Reason)
	}
}

// negateY returns the datagram with its ephemeral key's Y replaced by
// p−Y: the negated point, whose ECDH result has the same X, so it opens
// to the same knock.
func negateY(t *testing.T, data []byte) []byte {
	t.Helper()
	out := bytes.Clone(data)
	yAt := len(out) - ephemeralYSize
	y := new(big.Int).SetBytes(out[yAt:])
	y.Sub(elliptic.P256().Params().P, y)
	y.FillBytes(out[yAt:])
	return out
}

// TestReplayKeyBindsWhatIsSigned: the Y-negated copy of a vector knock is
// a different datagram that opens and would be granted on its own, but
// it has the original's replay key, so once the original is remembered
// the copy is a replay (issue 20: it was granted).
func TestReplayKeyBindsWhatIsSigned(t *testing.T) {
	trust := vectorTrust(t)
	data := readVector(t, "knock-a-tcp2000-v4.bin")
	copy := negateY(t, data)
	if bytes.Equal(copy, data) {
		t.Fatal("the negated copy is the datagram")
	}
	if d := Decide(vectorInput(copy, "198.18.0.2"), trust, nil); !d.Granted() {
		t.Fatalf("the negated copy on its own: %v %v (want it to open: the test would prove nothing)", d.Reason, d.Err)
	}
	cache := NewReplayCache(0)
	d := Decide(vectorInput(data, "198.18.0.2"), trust, cache)
	if !d.Granted() || cache.Add(d.ReplayKey, vectorClock.Add(time.Minute), vectorClock) != Added {
		t.Fatalf("original: %v %v", d.Reason, d.Err)
	}
	if d := Decide(vectorInput(copy, "198.18.0.2"), trust, cache); d.Reason != ReasonReplay {
		t.Errorf("the Y-negated copy after the original: %v %v, want replay", d.Reason, d.Err)
	}
}

// TestDamagedCopyDoesNotPoisonOutcomes: a copy with a damaged Y shares the
// genuine knock's replay key but fails to open; arriving first, its
// cached failure must not refuse the genuine knock.
func TestDamagedCopyDoesNotPoisonOutcomes(t *testing.T) {
	trust := vectorTrust(t)
	data := readVector(t, "knock-a-tcp2000-v4.bin")
	damaged := bytes.Clone(data)
	damaged[len(damaged)-1] ^= 1
	outcomes := newOutcomeCache(0)
	if d := decide(vectorInput(damaged, "198.18.0.2"), trust, nil, outcomes, nil); d.Granted() {
		t.Fatal("the damaged copy was granted")
	}
	if d := decide(vectorInput(data, "198.18.0.2"), trust, nil, outcomes, nil); !d.Granted() {
		t.Errorf("the genuine knock after a damaged copy: %v %v, want granted", d.Reason, d.Err)
	}
}
