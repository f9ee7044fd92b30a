package knock

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
)

// sealOpenSeeds are the fields of FuzzSealOpen's seed knocks: both
// protocols, both families, a v4-mapped address, the extremes of the port
// and timestamp, a protocol Seal refuses and an empty certificate.
var sealOpenSeeds = []struct {
	proto     uint8
	port      uint16
	ip        netip.Addr
	timestamp uint32
	cert      []byte
}{
	{uint8(packet.TCP), 2000, netip.MustParseAddr("198.18.0.2"), 1_767_225_600, []byte{0x30, 0x82, 0x01, 0x00}},
	{uint8(packet.UDP), 8000, netip.MustParseAddr("fd00:5e::7"), 1_767_225_600, make([]byte, 600)},
	{uint8(packet.TCP), 0, netip.MustParseAddr("::ffff:198.18.0.2"), 0, []byte{1}},
	{uint8(packet.UDP), 65535, netip.MustParseAddr("::"), 1<<32 - 1, []byte("certificate")},
	{uint8(packet.TCP), 22, netip.MustParseAddr("0.0.0.0"), 1, make([]byte, 15)},
	{0, 22, netip.MustParseAddr("198.18.0.2"), 1, []byte{1}},
	{uint8(packet.TCP), 22, netip.MustParseAddr("198.18.0.2"), 1, nil},
}

// FuzzSealOpen seals a knock with fuzzed fields under fixed keys and opens
// it: Open returns exactly what was sealed (a v4-mapped client address
// comes back as IPv4), and the signature verifies. What Seal refuses, it
// refuses with ErrInvalidArgument.
func FuzzSealOpen(f *testing.F) {
	clientKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	serverKey, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range sealOpenSeeds {
		ip := s.ip.As16()
		f.Add(s.proto, s.port, ip[:], s.timestamp, s.cert)
	}
	f.Fuzz(func(t *testing.T, proto uint8, port uint16, ip []byte, timestamp uint32, cert []byte) {
		clientIP, ok := netip.AddrFromSlice(ip)
		if !ok {
			return // neither 4 nor 16 bytes: no address to seal
		}
		give := &Knock{Proto: packet.Proto(proto), Port: port, ClientIP: clientIP, Timestamp: timestamp, Certificate: cert}
		datagram, err := Seal(give, clientKey, serverKey.PublicKey(), nil)
		if _, known := WireProto(give.Proto); !known || len(cert) == 0 {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Seal(proto %d, %d certificate bytes) = %v, want ErrInvalidArgument", proto, len(cert), err)
			}
			return
		}
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if err := CheckEnvelope(datagram); err != nil {
			t.Fatalf("CheckEnvelope of a sealed knock: %v", err)
		}
		want := clientIP.Unmap()
		got, err := Open(datagram, serverKey, want.Is6())
		if err != nil {
			t.Fatalf("Open of a sealed knock: %v", err)
		}
		wantKnock := Knock{
			Proto: give.Proto, Port: port, ClientIP: want, Timestamp: timestamp, Certificate: cert,
			Signature: give.Signature, Signed: give.Signed,
		}
		if diff := cmp.Diff(wantKnock, *got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
			t.Fatalf("Open(Seal(k)) (-want +got):\n%s", diff)
		}
		if !got.VerifySignature(&clientKey.PublicKey) {
			t.Fatal("the signature of a sealed knock does not verify")
		}
	})
}
