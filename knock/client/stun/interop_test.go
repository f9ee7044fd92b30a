package stun

import (
	"net"
	"net/netip"
	"testing"

	pion "github.com/pion/stun/v3"
)

// TestCodecAgreesWithPion checks the hand-written codec against
// github.com/pion/stun/v3 both ways: pion decodes our request and our
// response (fingerprint included), and we decode pion's responses, for
// IPv4 and IPv6, XOR-MAPPED and plain MAPPED addresses.
func TestCodecAgreesWithPion(t *testing.T) {
	id := newTransactionID()
	req := &pion.Message{Raw: encode(typeBindingRequest, id, attr{attrSoftware, []byte(software)})}
	if err := req.Decode(); err != nil || req.Type != pion.BindingRequest || req.TransactionID != id {
		t.Fatalf("pion decodes our request as %v, %v", req, err)
	}
	if err := pion.Fingerprint.Check(req); err != nil {
		t.Errorf("pion refuses our request's fingerprint: %v", err)
	}
	var sw pion.Software
	if err := sw.GetFrom(req); err != nil || sw.String() != software {
		t.Errorf("pion reads our SOFTWARE as %q, %v", sw.String(), err)
	}

	for _, s := range []string{"198.18.0.254:4242", "[fd00:5e::2]:65535"} {
		ap := netip.MustParseAddrPort(s)
		udp := net.UDPAddrFromAddrPort(ap)

		ours, ok := respond(req.Raw, udp)
		if !ok {
			t.Fatalf("%s: no response to our own request", s)
		}
		m := &pion.Message{Raw: ours}
		var xor pion.XORMappedAddress
		if err := m.Decode(); err != nil || m.Type != pion.BindingSuccess || m.TransactionID != id {
			t.Fatalf("%s: pion decodes our response as %v, %v", s, m, err)
		}
		if err := pion.Fingerprint.Check(m); err != nil {
			t.Errorf("%s: pion refuses our response's fingerprint: %v", s, err)
		}
		if err := xor.GetFrom(m); err != nil || !xor.IP.Equal(udp.IP) || xor.Port != udp.Port {
			t.Errorf("%s: pion reads our XOR-MAPPED-ADDRESS as %v, %v", s, xor, err)
		}

		for _, setter := range []pion.Setter{
			&pion.XORMappedAddress{IP: udp.IP, Port: udp.Port},
			&pion.MappedAddress{IP: udp.IP, Port: udp.Port},
		} {
			theirs := pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingSuccess, setter, pion.NewSoftware("pion"), pion.Fingerprint)
			got, ok := parseResponse(theirs.Raw, id)
			if !ok || got.Addr != ap || got.Software != "pion" {
				t.Errorf("%s: we read pion's %T response as %+v (ok %v)", s, setter, got, ok)
			}
			if _, ok := parseResponse(theirs.Raw, newTransactionID()); ok {
				t.Errorf("%s: a response to another transaction was taken", s)
			}
			bad := append([]byte(nil), theirs.Raw...)
			bad[len(bad)-1] ^= 1 // the fingerprint no longer matches
			if _, ok := parseResponse(bad, id); ok {
				t.Errorf("%s: a response with a wrong fingerprint was taken", s)
			}
		}
	}
}

// TestDecodeRefusesTruncated: every prefix of a good response is refused,
// never read past its end.
func TestDecodeRefusesTruncated(t *testing.T) {
	id := newTransactionID()
	good := encode(typeBindingSuccess, id, attr{attrXORMappedAddress, xorAddress(netip.MustParseAddrPort("198.18.0.1:1"), id)})
	for n := range len(good) {
		if _, ok := parseResponse(good[:n], id); ok {
			t.Errorf("a %d-byte prefix of a %d-byte response was taken", n, len(good))
		}
	}
	if _, ok := parseResponse(good, id); !ok {
		t.Error("the whole response was refused")
	}
}
