package knock

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
)

// readVector returns the contents of the interop vector file name.
func readVector(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(vector(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// vectorOpener is the v2 Opener of the vectors' server (server.pfx and
// server.der).
func vectorOpener(t testing.TB) *Opener {
	t.Helper()
	cert, err := x509.ParseCertificate(readVector(t, "server.der"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(cert.RawSubjectPublicKeyInfo, vectorServerKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// expectedV2 is one line of vectors/v2/expected.txt, as far as the wire
// format decides it.
type expectedV2 struct {
	Length   int      `json:"length"`
	HeaderOK bool     `json:"header_ok"`
	MAC1OK   bool     `json:"mac1_ok"`
	TS       uint64   `json:"ts_ms"`
	Family   int      `json:"family"`
	ClientIP string   `json:"client_ip"`
	Requests []string `json:"requests"`
	Chain    []string `json:"chain"`
}

func readExpectedV2(t testing.TB) map[string]expectedV2 {
	return readExpectedFile[expectedV2](t, "v2/expected.txt")
}

// describeV2 is what OpenV2 found in data, in expected.txt's terms.
func describeV2(o *Opener, data []byte) expectedV2 {
	got := expectedV2{Length: len(data), HeaderOK: CheckEnvelopeV2(data) == nil}
	got.MAC1OK = got.HeaderOK && o.CheckMAC1(data)
	k, err := o.OpenV2(data)
	if err != nil {
		return got
	}
	got.TS, got.ClientIP = k.TimestampMillis, k.ClientIP.String()
	got.Family = 4
	if k.ClientIP.Is6() {
		got.Family = 6
	}
	for _, r := range k.Requests {
		got.Requests = append(got.Requests, fmt.Sprintf("%s/%d", r.Proto, r.Port))
	}
	for _, der := range k.Chain {
		if c, err := x509.ParseCertificate(der); err == nil {
			got.Chain = append(got.Chain, c.Subject.String())
		}
	}
	return got
}

func TestOpenV2Vectors(t *testing.T) {
	o := vectorOpener(t)
	want := readExpectedV2(t)
	if len(want) == 0 {
		t.Fatal("no v2 vectors")
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			data := readVector(t, "v2/"+name)
			got := describeV2(o, data)
			if diff := cmp.Diff(w, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			if _, err := o.OpenV2(data); !w.MAC1OK && !errors.Is(err, ErrMAC1) {
				t.Errorf("OpenV2 = %v, want ErrMAC1", err)
			}
		})
	}
}

func TestOpenV2RejectsEveryChangedByte(t *testing.T) {
	o := vectorOpener(t)
	data := readVector(t, "v2/knock2-a-tcp2000-v4.bin")
	// mac1 covers every byte before it, and mac1 is its own check: a
	// one-bit change anywhere fails at step 1 or 2.
	for i := range data {
		mod := bytes.Clone(data)
		mod[i] ^= 0x01
		if _, err := o.OpenV2(mod); err == nil {
			t.Fatalf("byte %d changed and the knock still opened", i)
		}
	}
}

// testServer is a fresh P-256 server certificate's SPKI and key.
func testServer(t testing.TB) ([]byte, *ecdh.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := key.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return spki, priv
}

// fakeDER is a DER SEQUENCE of n content bytes.
func fakeDER(n int) []byte {
	switch {
	case n < 0x80:
		return append([]byte{0x30, byte(n)}, make([]byte, n)...)
	case n < 0x100:
		return append([]byte{0x30, 0x81, byte(n)}, make([]byte, n)...)
	}
	return append([]byte{0x30, 0x82, byte(n >> 8), byte(n)}, make([]byte, n)...)
}

func TestSealOpenV2RoundTrip(t *testing.T) {
	spki, priv := testServer(t)
	o, err := NewOpener(spki, priv)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	many := make([]Request, MaxRequests)
	for i := range many {
		many[i] = Request{Proto: packet.TCP, Port: uint16(1000 + i)}
	}
	tests := []struct {
		name string
		give KnockV2
	}{
		{"one tcp v4", KnockV2{TimestampMillis: 1796083200000, ClientIP: netip.MustParseAddr("198.18.0.2"), Requests: []Request{{packet.TCP, 22}}, Chain: [][]byte{fakeDER(400)}}},
		{"udp and tcp v6", KnockV2{TimestampMillis: 1, ClientIP: netip.MustParseAddr("fd00:5e::2"), Requests: []Request{{packet.UDP, 8000}, {packet.TCP, 8000}}, Chain: [][]byte{fakeDER(10), fakeDER(200)}}},
		{"sixteen requests, three certificates", KnockV2{TimestampMillis: 1<<63 - 1, ClientIP: netip.MustParseAddr("198.18.0.9"), Requests: many, Chain: [][]byte{fakeDER(300), fakeDER(127), fakeDER(128)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			give := tt.give
			data, err := SealV2(&give, client, o.Target, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := o.OpenV2(data)
			if err != nil {
				t.Fatalf("OpenV2: %v", err)
			}
			if diff := cmp.Diff(give, *got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("OpenV2(SealV2(k)) (-want +got):\n%s", diff)
			}
			if !got.VerifySignature(&client.PublicKey) {
				t.Error("signature does not verify")
			}
		})
	}
}

func TestSealV2Refuses(t *testing.T) {
	spki, _ := testServer(t)
	target, err := NewTarget(spki)
	if err != nil {
		t.Fatal(err)
	}
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ok := KnockV2{ClientIP: netip.MustParseAddr("198.18.0.2"), Requests: []Request{{packet.TCP, 22}}, Chain: [][]byte{fakeDER(10)}}
	tests := []struct {
		name   string
		change func(k *KnockV2)
	}{
		{"no requests", func(k *KnockV2) { k.Requests = nil }},
		{"seventeen requests", func(k *KnockV2) {
			for i := range 17 {
				k.Requests = append(k.Requests, Request{packet.UDP, uint16(i + 1)})
			}
		}},
		{"port 0", func(k *KnockV2) { k.Requests = []Request{{packet.TCP, 0}} }},
		{"icmp", func(k *KnockV2) { k.Requests = []Request{{1, 1}} }},
		{"twice", func(k *KnockV2) { k.Requests = []Request{{packet.TCP, 1}, {packet.TCP, 1}} }},
		{"no chain", func(k *KnockV2) { k.Chain = nil }},
		{"four certificates", func(k *KnockV2) { k.Chain = [][]byte{fakeDER(1), fakeDER(1), fakeDER(1), fakeDER(1)} }},
		{"not DER", func(k *KnockV2) { k.Chain = [][]byte{[]byte("certificate")} }},
		{"too big", func(k *KnockV2) { k.Chain = [][]byte{fakeDER(1100)} }},
		{"timestamp 2^63", func(k *KnockV2) { k.TimestampMillis = 1 << 63 }},
		{"no address", func(k *KnockV2) { k.ClientIP = netip.Addr{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := ok
			tt.change(&k)
			if _, err := SealV2(&k, client, target, nil); !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("SealV2 = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestOpenV2OtherServer(t *testing.T) {
	spki, priv := testServer(t)
	o, _ := NewOpener(spki, priv)
	otherSPKI, otherPriv := testServer(t)
	other, _ := NewOpener(otherSPKI, otherPriv)
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k := KnockV2{ClientIP: netip.MustParseAddr("198.18.0.2"), Requests: []Request{{packet.TCP, 22}}, Chain: [][]byte{fakeDER(10)}}
	data, err := SealV2(&k, client, o.Target, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.OpenV2(data); !errors.Is(err, ErrMAC1) {
		t.Errorf("another server's OpenV2 = %v, want ErrMAC1", err)
	}
	if _, err := NewOpener(spki, otherPriv); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("NewOpener with a key not the certificate's = %v, want ErrInvalidArgument", err)
	}
}

func TestParsePlaintextV2(t *testing.T) {
	base := func() []byte {
		b := []byte{0, 0, 0, 0, 0, 0, 0, 1, 4, 198, 18, 0, 2, 1, 6, 0, 22, 0, 2, 0x30, 0}
		return append(b, make([]byte, 8)...)
	}
	tests := []struct {
		name string
		give []byte
		want error
	}{
		{"good", base(), nil},
		{"family 5", func() []byte { b := base(); b[8] = 5; return b }(), ErrFamily},
		{"zero requests", func() []byte { b := base(); b[13] = 0; return b }(), ErrRequests},
		{"seventeen requests", func() []byte { b := base(); b[13] = 17; return b }(), ErrRequests},
		{"protocol 1", func() []byte { b := base(); b[14] = 1; return b }(), ErrRequests},
		{"port 0", func() []byte { b := base(); b[16] = 0; return b }(), ErrRequests},
		{"timestamp 2^63", func() []byte { b := base(); b[0] = 0x80; return b }(), ErrTimestamp},
		{"chain not DER", func() []byte { b := base(); b[19] = 0x31; return b }(), ErrChain},
		{"empty chain", func() []byte { b := base(); b[18] = 0; return append(b[:19], b[21:]...) }(), ErrChain},
		{"signature 7 bytes", base()[:len(base())-1], ErrSignatureSize},
		{"signature 73 bytes", append(base(), make([]byte, 65)...), ErrSignatureSize},
		{"truncated", base()[:12], ErrTooShort},
		{"non-minimal length", func() []byte {
			b := base()[:17]
			b = append(b, 0, 4, 0x30, 0x81, 0x01, 0)
			return append(b, make([]byte, 8)...)
		}(), ErrChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePlaintextV2(tt.give)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("ParsePlaintextV2 = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	tests := []struct {
		give []byte
		want int
	}{
		{[]byte("a\x01\x00\x00"), 1},
		{[]byte("a\x02\x00\x00"), 2},
		{[]byte("a\x02\x00\x01"), 0},
		{[]byte("a\x03\x00\x00"), 0},
		{[]byte("b\x02\x00\x00"), 0},
		{[]byte("a\x02"), 0},
	}
	for _, tt := range tests {
		if got := Version(tt.give); got != tt.want {
			t.Errorf("Version(%q) = %d, want %d", tt.give, got, tt.want)
		}
	}
}

// v2Knocks returns every v2 vector knock (the fuzz targets' seeds).
func v2Knocks(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob(vector(t, "v2/knock2-*.bin"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no v2 vector knocks: %v", err)
	}
	out := make([][]byte, len(files))
	for i, name := range files {
		out[i] = readVector(t, filepath.Join("v2", filepath.Base(name)))
	}
	return out
}

// FuzzOpenV2 opens fuzzed datagrams under the vectors' server, seeded from
// the v2 vectors and versions of them with a correct mac1 over a changed
// body (so that the fuzzer reaches the HPKE open). It never panics, and
// what opens is consistent.
func FuzzOpenV2(f *testing.F) {
	o := vectorOpener(f)
	for _, data := range v2Knocks(f) {
		f.Add(data, false)
		f.Add(data, true)
		f.Add(data[:len(data)/2], true)
	}
	f.Fuzz(func(t *testing.T, data []byte, fixMAC bool) {
		if fixMAC && len(data) >= MAC1Size {
			data = bytes.Clone(data)
			var sum [32]byte
			o.mac1(data[:len(data)-MAC1Size], &sum)
			copy(data[len(data)-MAC1Size:], sum[:MAC1Size])
		}
		k, err := o.OpenV2(data)
		if err != nil {
			if k != nil {
				t.Fatal("knock returned with an error")
			}
			return
		}
		if len(k.Requests) == 0 || len(k.Chain) == 0 || len(k.Signature) < 8 || !bytes.Equal(k.Enc, data[4:69]) {
			t.Fatalf("OpenV2 accepted an inconsistent knock: %+v", k)
		}
	})
}

// FuzzParsePlaintextV2 parses fuzzed plaintexts, seeded from the vectors'
// plaintexts: it never panics, and what parses marshals back to the same
// bytes.
func FuzzParsePlaintextV2(f *testing.F) {
	o := vectorOpener(f)
	for _, data := range v2Knocks(f) {
		if plain, err := openPlaintext(o, data); err == nil {
			f.Add(plain)
		}
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		k, err := ParsePlaintextV2(plain)
		if err != nil {
			return
		}
		again, err := marshalPlaintextV2(k)
		if err != nil {
			t.Fatalf("a parsed plaintext does not marshal: %v", err)
		}
		again = append(again, k.Signature...)
		if !bytes.Equal(again, plain) {
			t.Fatalf("marshal(parse(p)) != p:\n%x\n%x", again, plain)
		}
	})
}

// openPlaintext decrypts a v2 datagram and returns its plaintext.
func openPlaintext(o *Opener, data []byte) ([]byte, error) {
	k, err := o.OpenV2(data)
	if err != nil {
		return nil, err
	}
	plain, _ := marshalPlaintextV2(k)
	return append(plain, k.Signature...), nil
}

func BenchmarkOpenV2(b *testing.B) {
	o := vectorOpener(b)
	data := readVector(b, "v2/knock2-a-tcp2000-v4.bin")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := o.OpenV2(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckMAC1(b *testing.B) {
	o := vectorOpener(b)
	data := readVector(b, "v2/knock2-a-badmac.bin")
	b.ReportAllocs()
	for b.Loop() {
		if o.CheckMAC1(data) {
			b.Fatal("bad mac1 accepted")
		}
	}
}

func BenchmarkSealV2(b *testing.B) {
	spki, _ := testServer(b)
	target, _ := NewTarget(spki)
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k := KnockV2{ClientIP: netip.MustParseAddr("198.18.0.2"), Requests: []Request{{packet.TCP, 22}}, Chain: [][]byte{fakeDER(450)}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SealV2(&k, client, target, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMAC1IsHMAC(t *testing.T) {
	spki, _ := testServer(t)
	target, _ := NewTarget(spki)
	key := sha256.Sum256(append([]byte("sknock knock v2 mac1"), spki...))
	for _, n := range []int{0, 1, 63, 64, 65, 700, MaxDatagramSizeV2} {
		body := bytes.Repeat([]byte{byte(n)}, n)
		m := hmac.New(sha256.New, key[:])
		m.Write(body)
		var got [32]byte
		target.mac1(body, &got)
		if want := m.Sum(nil); !bytes.Equal(got[:], want) {
			t.Errorf("%d bytes: mac1 %x, want HMAC %x", n, got, want)
		}
	}
}

func TestCheckMAC1DoesNotAllocate(t *testing.T) {
	o := vectorOpener(t)
	data := readVector(t, "v2/knock2-a-tcp2000-v4.bin")
	if n := testing.AllocsPerRun(100, func() { o.CheckMAC1(data) }); n != 0 {
		t.Errorf("CheckMAC1: %v allocations, want 0", n)
	}
}
