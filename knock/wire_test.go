package knock

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"software.sslmate.com/src/go-pkcs12"

	"sknock/internal/testenv"
	"sknock/packet"
)

// vector is the path of the interop vector file name (see
// testenv.VectorsDir: skipped when the vectors are absent).
func vector(t testing.TB, name string) string {
	t.Helper()
	return filepath.Join(testenv.VectorsDir(t), name)
}

// vectorServerKey loads the server's key from the interop vectors.
func vectorServerKey(t testing.TB) *ecdh.PrivateKey {
	t.Helper()
	data, err := os.ReadFile(vector(t, "server.pfx"))
	if err != nil {
		t.Fatal(err)
	}
	key, _, _, err := pkcs12.DecodeChain(data, "portknocking")
	if err != nil {
		t.Fatal(err)
	}
	k, err := key.(*ecdsa.PrivateKey).ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type expected struct {
	Proto    string `json:"proto"`
	Port     uint16 `json:"port"`
	ClientIP string `json:"client_ip"`
	TS       uint32 `json:"ts"`
}

func readExpected(t testing.TB) map[string]expected {
	return readExpectedFile[expected](t, "expected.txt")
}

// readExpectedFile reads a vectors' expected.txt (file, below the
// vectors directory): one "NAME {JSON}" line per packet.
func readExpectedFile[T any](t testing.TB, file string) map[string]T {
	t.Helper()
	data, err := os.ReadFile(vector(t, file))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]T{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		name, js, _ := strings.Cut(line, " ")
		var e T
		if err := json.Unmarshal([]byte(js), &e); err != nil {
			t.Fatalf("%s %s: %v", file, name, err)
		}
		out[name] = e
	}
	return out
}

func TestOpenVectors(t *testing.T) {
	key := vectorServerKey(t)
	want := readExpected(t)
	if len(want) == 0 {
		t.Fatal("no vectors")
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(vector(t, name))
			if err != nil {
				t.Fatal(err)
			}
			ipv6 := strings.Contains(w.ClientIP, ":")
			k, err := Open(data, key, ipv6)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			got := expected{Proto: k.Proto.String(), Port: k.Port, ClientIP: k.ClientIP.String(), TS: k.Timestamp}
			if diff := cmp.Diff(w, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			certName := strings.TrimPrefix(strings.SplitN(name, "-", 3)[0]+"-"+strings.SplitN(name, "-", 3)[1], "knock-")
			if der, err := os.ReadFile(vector(t, "client-"+certName+".der")); err == nil && !bytes.Equal(der, k.Certificate) {
				t.Errorf("certificate differs from client-%s.der", certName)
			}
		})
	}
}

func TestOpenRejectsEveryChangedByte(t *testing.T) {
	key := vectorServerKey(t)
	data, err := os.ReadFile(vector(t, "knock-a-tcp2000-v4.bin"))
	if err != nil {
		t.Fatal(err)
	}
	// A flipped byte either breaks the envelope (Open fails) or, inside
	// the ciphertext, garbles the plaintext; whatever survives Open must
	// then fail the signature check.
	for i := range data {
		mod := bytes.Clone(data)
		mod[i] ^= 0x01
		k, err := Open(mod, key, false)
		if err != nil {
			continue
		}
		if sameKnock(t, k, data, key) {
			t.Fatalf("byte %d changed but the knock opened to the same content", i)
		}
	}
}

// sameKnock reports whether k has the content of the original datagram.
func sameKnock(t *testing.T, k *Knock, orig []byte, key *ecdh.PrivateKey) bool {
	o, err := Open(orig, key, false)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(o.Signed, k.Signed) && bytes.Equal(o.Signature, k.Signature)
}

func TestSealOpenRoundTrip(t *testing.T) {
	server, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	client, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give Knock
		ipv6 bool
	}{
		{"tcp v4", Knock{Proto: packet.TCP, Port: 2000, ClientIP: netip.MustParseAddr("198.18.0.2"), Timestamp: 1767225600, Certificate: []byte("cert-der")}, false},
		{"udp v6", Knock{Proto: packet.UDP, Port: 8000, ClientIP: netip.MustParseAddr("fd00:5e::2"), Timestamp: 1, Certificate: bytes.Repeat([]byte{7}, 500)}, true},
		{"v4-mapped embeds 4 bytes", Knock{Proto: packet.TCP, Port: 65535, ClientIP: netip.MustParseAddr("::ffff:198.18.0.9"), Timestamp: 0xffffffff, Certificate: []byte{1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			give := tt.give
			dgram, err := Seal(&give, client, server.PublicKey(), nil)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Open(dgram, server, tt.ipv6)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.give
			want.ClientIP = want.ClientIP.Unmap()
			if diff := cmp.Diff(want, *got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.FilterPath(func(p cmp.Path) bool {
					n := p.Last().String()
					return n == ".Signature" || n == ".Signed"
				}, cmp.Ignore())); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			if !got.VerifySignature(&client.PublicKey) {
				t.Error("signature does not verify after the round trip")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	server, _ := ecdh.P256().GenerateKey(rand.Reader)
	other, _ := ecdh.P256().GenerateKey(rand.Reader)
	client, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, err := Seal(&Knock{Proto: packet.TCP, Port: 1, ClientIP: netip.MustParseAddr("198.18.0.2"), Certificate: []byte("c")}, client, server.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name string
		give []byte
		key  *ecdh.PrivateKey
		want error
	}{
		{"empty", nil, server, ErrTooShort},
		{"short", good[:MinDatagramSize-1], server, ErrTooShort},
		{"protocol id", with(func(b []byte) []byte { b[0] = 'b'; return b }), server, ErrProtocolID},
		{"newer major", with(func(b []byte) []byte { b[1] = 2; return b }), server, ErrVersion},
		{"newer patch", with(func(b []byte) []byte { b[3] = 1; return b }), server, ErrVersion},
		{"ragged ciphertext", append(bytes.Clone(good[:len(good)-PublicKeySize]), append([]byte{0}, good[len(good)-PublicKeySize:]...)...), server, ErrCiphertextSize},
		{"bad point", with(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), server, ErrPublicKey},
		{"wrong server key", good, other, ErrPadding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.give, tt.key, false)
			// A wrong key decrypts to garbage: almost always bad padding,
			// rarely a layout error further on; never success.
			if tt.name == "wrong server key" {
				if err == nil {
					t.Fatal("opened with the wrong key")
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Open() error = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzOpen(f *testing.F) {
	key := vectorServerKey(f)
	files, _ := filepath.Glob(vector(f, "knock-*.bin"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, false)
		f.Add(data[:len(data)/2], true)
	}
	f.Add([]byte("a\x01\x00\x00"), false)
	f.Fuzz(func(t *testing.T, data []byte, ipv6 bool) {
		k, err := Open(data, key, ipv6)
		if err != nil {
			if k != nil {
				t.Fatal("knock returned with an error")
			}
			return
		}
		if !k.Proto.Valid() || len(k.Certificate) == 0 || len(k.Signature) == 0 || len(k.Signature) > MaxSignatureSize {
			t.Fatalf("Open accepted an inconsistent knock: %+v", k)
		}
	})
}
