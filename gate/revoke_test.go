package gate

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// TestSetTrustEndsRevokedGrants: a reload whose CRL newly revokes carol
// ends her live grants at once and returns them with her serial, while
// alice's grant, and carol's already expired one, are not returned.
func TestSetTrustEndsRevokedGrants(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000", "carol": "tcp/2000,tcp/3000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	e := NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, OpenDuration: time.Minute}, p.trust(t))
	alice := netip.MustParseAddr("198.18.0.2")
	carol := netip.MustParseAddr("198.18.0.5")
	for _, k := range []struct {
		who  string
		src  netip.Addr
		port uint16
	}{{"alice", alice, 2000}, {"carol", carol, 2000}, {"carol", carol, 3000}} {
		if d := e.Knock(k.src, p.seal(t, k.who, packet.TCP, k.port, k.src.String(), clock.Now())); !d.Granted() {
			t.Fatalf("%s tcp/%d: %v %v", k.who, k.port, d.Reason, d.Err)
		}
	}
	if ended := e.SetTrust(p.trust(t)); len(ended.Grants) != 0 {
		t.Fatalf("a reload revoking nothing ended %+v", ended)
	}

	p.Revoke(t, "carol")
	ended := e.SetTrust(p.trust(t))
	if len(ended.Grants) != 2 {
		t.Fatalf("ended %d grants, want carol's 2: %+v", len(ended.Grants), ended)
	}
	carolSerial := p.Issued(t, "carol").Cert.SerialNumber
	for _, g := range ended.Grants {
		if g.Source != carol || g.Serial.Cmp(carolSerial) != 0 || !g.Expiry.After(clock.Now()) || g.Why == nil || g.StillOpen {
			t.Errorf("ended %+v, want carol's grants with serial %s, a future expiry and why", g, carolSerial)
		}
	}
	if v := verdictOf(e, carol, packet.TCP, 2000); v != packet.Reject {
		t.Errorf("carol after the revocation: %v, want reject", v)
	}
	if v := verdictOf(e, alice, packet.TCP, 2000); v != packet.Accept {
		t.Errorf("alice after carol's revocation: %v, want accept", v)
	}
	if ended := e.SetTrust(p.trust(t)); len(ended.Grants) != 0 {
		t.Errorf("the same CRL again ended %+v", ended)
	}
}

// TestGrantTableEnd: End removes the shares of the named certificates,
// returns only those still live, and leaves the others.
func TestGrantTableEnd(t *testing.T) {
	tab := NewGrantTable(0)
	now := time.Now()
	a, b := testCert(7), testCert(8)
	tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.2"), Proto: packet.TCP, Port: 1}, a, now.Add(time.Minute))
	tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.3"), Proto: packet.TCP, Port: 1}, a, now.Add(-time.Second))
	tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.4"), Proto: packet.TCP, Port: 1}, b, now.Add(time.Minute))
	ended := tab.End(map[CertID]error{a: nil}, now)
	if len(ended) != 1 || ended[0].Source != netip.MustParseAddr("198.18.0.2") || ended[0].Cert != a {
		t.Errorf("End = %+v, want the live grant of cert 7", ended)
	}
	if n := tab.Len(); n != 1 {
		t.Errorf("%d grants left, want b's 1", n)
	}
}

// TestCertIDOf: distinct certificates get distinct CertIDs of 128 bits;
// none gets the zero one.
func TestCertIDOf(t *testing.T) {
	a, b := CertIDOf([]byte("certificate a")), CertIDOf([]byte("certificate b"))
	if a.IsZero() || a == b || !CertIDOf(nil).IsZero() {
		t.Errorf("CertIDOf: a → %x, b → %x, nil → %x", a, b, CertIDOf(nil))
	}
}

// TestSourceMismatchRemembered: a signed knock refused because it came
// from another address than the one it names is remembered like a grant,
// so that resending it from the named address (an attacker who forged
// the client's address discovery) is a replay, never a grant.
func TestSourceMismatchRemembered(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	var remembered []ReplayEntry
	e := NewEngine(Config{Clock: clock.Now, Policy: PolicyReject, Remember: func(r ReplayEntry, _ ReplayCoverage) {
		remembered = append(remembered, r)
	}}, p.trust(t))
	victim, attacker := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.66")
	forged := p.seal(t, "alice", packet.TCP, 2000, attacker.String(), clock.Now()) // names the attacker's address
	if d := e.Knock(victim, forged); d.Reason != ReasonSourceMismatch {
		t.Fatalf("the knock from the victim: %v, want source_mismatch", d.Reason)
	}
	if len(remembered) != 1 {
		t.Errorf("Remember told of %d entries, want 1 (kept across restarts)", len(remembered))
	}
	clock.Advance(time.Second)
	if d := e.Knock(attacker, forged); d.Reason != ReasonReplay {
		t.Errorf("resent from the address it names: %v %v, want replay", d.Reason, d.Err)
	}
	if e.Grants().Allowed(attacker, packet.TCP, 2000, clock.Now()) {
		t.Error("the attacker holds a grant")
	}
}

// TestAttributeConns: after the rules come back, a connection opened
// without them is recorded to the live grant of its source and port, so
// that revoking that grant's certificate ends it; a recorded connection
// keeps its attribution, and one without a live grant is not recorded.
func TestAttributeConns(t *testing.T) {
	e := NewEngine(Config{Policy: PolicyDrop}, nil)
	e.ConnsCapacity() // the record, as the first grant makes it
	now := time.Unix(1_800_000_000, 0)
	carol, dave, old := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3"), netip.MustParseAddr("198.18.0.4")
	e.Grants().Add(Grant{Source: carol, Proto: packet.TCP, Port: 2000}, testCert(1), now.Add(time.Minute))
	e.Grants().Add(Grant{Source: dave, Proto: packet.TCP, Port: 2000}, testCert(2), now.Add(time.Minute))
	e.Grants().Add(Grant{Source: old, Proto: packet.TCP, Port: 2000}, testCert(3), now.Add(-time.Second))
	server := netip.MustParseAddr("198.19.0.1")
	conn := func(src netip.Addr, sport, dport uint16) Conn {
		return Conn{Proto: packet.TCP, Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(server, dport)}
	}
	// Dave's connection met the gate: it is recorded to dave alone.
	gated := conn(dave, 40000, 2000)
	h := packet.Header{Family: 4, Proto: packet.TCP, Src: dave, Dst: server, SrcPort: 40000, DstPort: 2000}
	if v, _ := e.Verdict(&h, now); v != packet.Accept {
		t.Fatalf("dave's SYN: %v, want accept", v)
	}
	// Carol's grant now also covers dave's address (a shared NAT
	// address), which must not change whom the gated connection is
	// attributed to.
	e.Grants().Add(Grant{Source: dave, Proto: packet.TCP, Port: 2000}, testCert(1), now.Add(time.Minute))

	window := conn(carol, 40001, 2000)
	mapped := Conn{Proto: packet.TCP, Src: netip.AddrPortFrom(netip.MustParseAddr("::ffff:198.18.0.2"), 40002),
		Dst: netip.AddrPortFrom(netip.MustParseAddr("::ffff:198.19.0.1"), 2000)}
	for _, tc := range []struct {
		name           string
		conns          []Conn
		want, wantLeft int
	}{
		{"one opened in the window, one gated", []Conn{window, gated}, 1, 0},
		{"the same again", []Conn{window, gated}, 0, 0},
		{"IPv4 in IPv6 form", []Conn{mapped}, 1, 0},
		{"no grant for the port", []Conn{conn(carol, 40003, 2001)}, 0, 1},
		{"no grant for the source", []Conn{conn(netip.MustParseAddr("198.18.0.9"), 40004, 2000)}, 0, 1},
		{"an expired grant", []Conn{conn(old, 40005, 2000)}, 0, 1},
	} {
		got, left := e.AttributeConns(tc.conns, now)
		if got != tc.want || len(left) != tc.wantLeft {
			t.Errorf("%s: AttributeConns recorded %d and left %v, want %d and %d left", tc.name, got, left, tc.want, tc.wantLeft)
		}
	}

	ended := e.endCerts(map[CertID]error{testCert(1): nil}, now)
	got := map[Conn]bool{}
	for _, c := range ended.Conns {
		got[c] = true
	}
	want := map[Conn]bool{window: true, conn(carol, 40002, 2000): true}
	if len(got) != len(want) || !got[window] || !got[conn(carol, 40002, 2000)] {
		t.Errorf("revoking carol ended %v, want %v (dave's gated connection is dave's alone)", ended.Conns, want)
	}
}

// TestAttributeConnsWithoutRecord: before any grant made the record,
// there is nothing to attribute to.
func TestAttributeConnsWithoutRecord(t *testing.T) {
	e := NewEngine(Config{Policy: PolicyDrop}, nil)
	c := Conn{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.2:40000"), Dst: netip.MustParseAddrPort("198.19.0.1:2000")}
	if n, left := e.AttributeConns([]Conn{c}, time.Now()); n != 0 || len(left) != 1 {
		t.Errorf("AttributeConns = %d, %v without a record, want 0 and c left", n, left)
	}
}
