package gate

import (
	"math/big"
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
	"sknock/pki"
)

// TestCertBookBound: a full book forgets the certificates without a live
// grant to note a new one, and notes nothing more while every one it
// holds has a grant.
func TestCertBookBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	grants := NewGrantTable(0)
	book := NewCertBook(grants, 2)
	client := func(n int64) *pki.Client {
		return &pki.Client{Subject: "CN=c" + big.NewInt(n).String(), Serial: big.NewInt(n)}
	}
	grant := func(n int64) {
		src := netip.AddrFrom4([4]byte{198, 18, 0, byte(n)})
		if err := grants.Add(Grant{Source: src, Proto: packet.TCP, Port: 2000}, CertIDOf(big.NewInt(n)), now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	grant(1)
	book.Note(client(1), now)
	book.Note(client(2), now) // no grant: forgotten when the book is full
	grant(3)
	book.Note(client(3), now)
	if _, ok := book.Lookup(CertIDOf(big.NewInt(2))); ok {
		t.Error("certificate 2 (no grant) kept in a full book")
	}
	for _, n := range []int64{1, 3} {
		if c, ok := book.Lookup(CertIDOf(big.NewInt(n))); !ok || c.Serial.Int64() != n {
			t.Errorf("certificate %d: %+v, %v; want it noted", n, c, ok)
		}
	}
	grant(4)
	book.Note(client(4), now)
	if _, ok := book.Lookup(CertIDOf(big.NewInt(4))); ok {
		t.Error("certificate 4 noted in a book full of certificates with grants")
	}
}
