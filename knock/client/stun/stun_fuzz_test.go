package stun

import (
	"net"
	"testing"

	pion "github.com/pion/stun/v3"
)

// FuzzParseResponse: whatever a datagram from the network holds, reading
// it as the answer to a request neither panics nor yields an invalid
// address; and the server's reader never panics either.
func FuzzParseResponse(f *testing.F) {
	id := pion.NewTransactionID()
	good := pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingSuccess,
		&pion.XORMappedAddress{IP: net.IPv4(198, 18, 0, 254), Port: 4242}, pion.NewSoftware("x"), pion.Fingerprint)
	f.Add(good.Raw)
	f.Add(pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingSuccess,
		&pion.MappedAddress{IP: net.ParseIP("fd00:5e::1"), Port: 1}).Raw)
	f.Add(pion.MustBuild(pion.NewTransactionIDSetter(id), pion.BindingRequest).Raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if a, ok := parseResponse(b, id); ok && !a.Addr.IsValid() {
			t.Fatalf("accepted an invalid address from %x", b)
		}
		respond(b, &net.UDPAddr{IP: net.IPv4(198, 18, 0, 2), Port: 5})
	})
}
