package gate

import (
	"crypto/x509"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/pki"
)

// natPair is carol and dave behind one NAT address, each with a grant
// for tcp/8080 on an engine, and alice at her own address.
type natPair struct {
	p     *testPKI
	clock *fakeClock
	e     *Engine
	nat   netip.Addr
	alice netip.Addr
}

func newNatPair(t *testing.T) *natPair {
	t.Helper()
	p := newTestPKI(t, map[string]string{"alice": "tcp/8080", "carol": "tcp/8080", "dave": "tcp/8080"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	n := &natPair{p: p, clock: clock, nat: netip.MustParseAddr("198.18.0.9"), alice: netip.MustParseAddr("198.18.0.2")}
	n.e = NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, OpenDuration: time.Minute}, p.trust(t))
	return n
}

func (n *natPair) knock(t *testing.T, who string, src netip.Addr) {
	t.Helper()
	if d := n.e.Knock(src, n.p.seal(t, who, packet.TCP, 8080, src.String(), n.clock.Now())); !d.Granted() {
		t.Fatalf("%s's knock: %v %v", who, d.Reason, d.Err)
	}
}

// connect sends the first packet of a connection from src:port to
// tcp/8080 and returns its verdict.
func (n *natPair) connect(src netip.Addr, port uint16) packet.Verdict {
	h := header(src, packet.TCP, 8080)
	h.SrcPort = port
	v, _ := n.e.Verdict(&h, n.clock.Now())
	return v
}

func conn(src netip.Addr, port uint16) Conn {
	h := header(src, packet.TCP, 8080)
	return Conn{Proto: packet.TCP, Src: netip.AddrPortFrom(src, port), Dst: netip.AddrPortFrom(h.Dst, 8080)}
}

func sortedConns(cs []Conn) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

// TestSharedAddressRevocation: carol connects (40001) before dave knocks
// from the same NAT address; after dave's knock, a connection (40002) is
// attributed to both. Revoking dave, by CRL or by serial, ends dave's
// share and the connection opened under both, never carol's own
// connection, and the address stays open under carol's share.
func TestSharedAddressRevocation(t *testing.T) {
	for _, how := range []string{"crl", "serial"} {
		t.Run(how, func(t *testing.T) {
			n := newNatPair(t)
			n.knock(t, "carol", n.nat)
			n.knock(t, "alice", n.alice)
			if v := n.connect(n.nat, 40001); v != packet.Accept {
				t.Fatalf("carol's connection: %v", v)
			}
			n.knock(t, "dave", n.nat)
			if v := n.connect(n.nat, 40002); v != packet.Accept {
				t.Fatalf("a connection under both shares: %v", v)
			}
			n.connect(n.alice, 40003)

			var ended Ended
			dave := n.p.Issued(t, "dave").Cert
			switch how {
			case "crl":
				n.p.Revoke(t, "dave")
				ended = n.e.SetTrust(n.p.trust(t))
			case "serial":
				ended = n.e.EndGrants(Selection{Serial: dave.SerialNumber})
			}
			if len(ended.Grants) != 1 || ended.Grants[0].Serial.Cmp(dave.SerialNumber) != 0 || !ended.Grants[0].StillOpen {
				t.Errorf("ended grants %+v, want dave's share, with the address still open", ended.Grants)
			}
			if diff := cmp.Diff(sortedConns([]Conn{conn(n.nat, 40002)}), sortedConns(ended.Conns)); diff != "" {
				t.Errorf("ended connections (-want +got):\n%s", diff)
			}
			if v := n.connect(n.nat, 40004); v != packet.Accept {
				t.Errorf("a new connection from the NAT address under carol's share: %v, want accept", v)
			}
			list, _ := n.e.Grants().List(n.clock.Now(), 0)
			var subjects []string
			for _, g := range list {
				subjects = append(subjects, g.Subject)
			}
			slices.Sort(subjects)
			if len(subjects) != 2 || !strings.Contains(subjects[0], "alice") || !strings.Contains(subjects[1], "carol") {
				t.Errorf("shares left %v, want alice's and carol's", subjects)
			}

			// Now carol: her first connection, and the one made after dave
			// was revoked, end; alice's does not.
			ended = n.e.EndGrants(Selection{Serial: n.p.Issued(t, "carol").Cert.SerialNumber})
			if diff := cmp.Diff(sortedConns([]Conn{conn(n.nat, 40001), conn(n.nat, 40004)}), sortedConns(ended.Conns)); diff != "" {
				t.Errorf("carol's ended connections (-want +got):\n%s", diff)
			}
			if len(ended.Grants) != 1 || ended.Grants[0].StillOpen {
				t.Errorf("carol's ended grants %+v, want one, closing the address", ended.Grants)
			}
			if v := n.connect(n.nat, 40005); v != packet.Reject {
				t.Errorf("the NAT address with no share left: %v, want reject", v)
			}
		})
	}
}

// TestTrustChangeRejudgesGrants: a trust change verifies again the
// certificate behind every share: an intermediate CA revoked, or taken
// out of the trusted CAs, ends its client's share and connections; an
// expired certificate's too; others stay.
func TestTrustChangeRejudgesGrants(t *testing.T) {
	for _, how := range []string{"intermediate revoked", "CA removed", "expired"} {
		t.Run(how, func(t *testing.T) {
			p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
			dave, sub := p.Intermediate(t, "ops", "dave")
			chain, err := pki.LoadCertificates(filepath.Join(sub, "ca.pem"))
			if err != nil {
				t.Fatal(err)
			}
			trustWith := func(cas []*x509.Certificate) *Trust {
				t.Helper()
				tr, err := NewTrust(p.Server, cas, p.LoadCRL(t), 7*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				return tr
			}
			all := append(slices.Clone(p.Server.CAs), chain[0])
			clock := &fakeClock{now: time.Now().Truncate(time.Second)}
			// Long grants, so that dave's share outlives his certificate.
			e := NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, OpenDuration: 20 * 365 * 24 * time.Hour}, trustWith(all))
			alice, daveAt := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")
			for who, k := range map[netip.Addr][]byte{
				alice:  p.seal(t, "alice", packet.TCP, 2000, alice.String(), clock.Now()),
				daveAt: dave.Seal(t, p.ServerKey, packet.TCP, 2000, daveAt, clock.Now()),
			} {
				if d := e.Knock(who, k); !d.Granted() {
					t.Fatalf("knock from %s: %v %v", who, d.Reason, d.Err)
				}
				h := header(who, packet.TCP, 2000)
				e.Verdict(&h, clock.Now())
			}
			var ended Ended
			switch how {
			case "intermediate revoked":
				if err := pki.Revoke(p.Dir, "ops"); err != nil {
					t.Fatal(err)
				}
				p.WriteCRL(t)
				ended = e.SetTrust(trustWith(all))
			case "CA removed":
				ended = e.SetTrust(trustWith(p.Server.CAs))
			case "expired":
				clock.now = dave.Cert.NotAfter.Add(time.Second)
				ended = e.SetTrust(trustWith(all))
				if p.Issued(t, "alice").Cert.NotAfter.Before(clock.now) {
					ended.Grants = slices.DeleteFunc(ended.Grants, func(g EndedGrant) bool { return g.Source == alice })
					ended.Conns = slices.DeleteFunc(ended.Conns, func(c Conn) bool { return c.Src.Addr() == alice })
				}
			}
			if len(ended.Grants) != 1 || ended.Grants[0].Source != daveAt || ended.Grants[0].Why == nil {
				t.Errorf("ended grants %+v, want dave's, with why", ended.Grants)
			}
			if len(ended.Conns) != 1 || ended.Conns[0].Src.Addr() != daveAt {
				t.Errorf("ended connections %v, want dave's", ended.Conns)
			}
			if how != "expired" && !e.Grants().Allowed(alice, packet.TCP, 2000, clock.Now()) {
				t.Error("alice's grant ended too")
			}
		})
	}
}

// TestAddAllShares: a v2 knock's grants are shares of its certificate,
// all or none: revoking it ends its shares only, and the neighbour's
// share of a common port keeps that port open.
func TestAddAllShares(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	src := netip.MustParseAddr("198.18.0.9")
	carol, dave := CertID{1}, CertID{2}
	tab := NewGrantTable(0)
	tab.SetCertShare(3)
	v2 := []Grant{{Source: src, Proto: packet.TCP, Port: 2000}, {Source: src, Proto: packet.TCP, Port: 3000}}
	if err := tab.AddAll(v2, carol, now.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(Grant{Source: src, Proto: packet.TCP, Port: 2000}, dave, now.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// carol holds two of her three: a knock for two new ports is refused
	// whole, and leaves her count as it was.
	more := []Grant{{Source: src, Proto: packet.TCP, Port: 4000}, {Source: src, Proto: packet.TCP, Port: 5000}}
	if err := tab.AddAll(more, carol, now.Add(10*time.Second)); err != ErrCertShare {
		t.Fatalf("AddAll beyond the share: %v, want ErrCertShare", err)
	}
	if tab.Allowed(src, packet.TCP, 4000, now) {
		t.Error("a refused AddAll left tcp/4000 open")
	}
	if err := tab.AddAll(v2, carol, now.Add(20*time.Second)); err != nil {
		t.Fatalf("AddAll extending carol's own shares: %v", err)
	}
	ended := tab.End(map[CertID]error{carol: nil}, now)
	if len(ended) != 2 {
		t.Fatalf("ended %+v, want carol's two shares", ended)
	}
	for _, g := range ended {
		if g.Cert != carol || g.StillOpen != (g.Port == 2000) {
			t.Errorf("ended %+v: want carol's, still open only on tcp/2000 (dave's share)", g)
		}
	}
	if !tab.Allowed(src, packet.TCP, 2000, now) || tab.Allowed(src, packet.TCP, 3000, now) {
		t.Error("after carol's revocation: want tcp/2000 open (dave) and tcp/3000 closed")
	}
}
