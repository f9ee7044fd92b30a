package gate

import (
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// TestGrantShardsResistChosenAddresses: addresses chosen to share every
// byte but a few in the middle (an insider's /48, picking what once chose
// the shard) still spread over the shards, so filling one shard takes
// filling the table.
func TestGrantShardsResistChosenAddresses(t *testing.T) {
	tab := NewGrantTable(0)
	used := map[*grantShard]bool{}
	for i := range 1000 {
		a := netip.MustParseAddr("fd00:5e:1::").As16()
		a[6], a[7] = byte(i>>8), byte(i) // bytes 13 and 15 stay fixed
		k := keyFor(netip.AddrFrom16(a), packet.TCP, 2000)
		used[tab.shard(&k)] = true
	}
	if len(used) < grantShards {
		t.Errorf("1000 chosen addresses landed in %d of %d shards, want all", len(used), grantShards)
	}
}

// TestGrantTableShardBound: 100 grants from chosen addresses fit a table
// of 1024 (64 a shard); with a shard chosen by address bytes, 36 were
// refused.
func TestGrantTableShardBound(t *testing.T) {
	tab := NewGrantTable(grantShards * 64)
	until := time.Now().Add(time.Minute)
	refused := 0
	for i := range 100 {
		a := netip.MustParseAddr("fd00:5e:1::").As16()
		a[6], a[7] = byte(i>>8), byte(i)
		if tab.Add(Grant{Source: netip.AddrFrom16(a), Proto: packet.TCP, Port: 2000}, CertID{}, until) != nil {
			refused++
		}
	}
	if refused != 0 {
		t.Errorf("%d of 100 chosen grants refused in a table of %d", refused, grantShards*64)
	}
	if tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.2"), Proto: packet.TCP, Port: 2000}, CertID{}, until) != nil {
		t.Error("a new client's grant refused")
	}
}

// TestGrantTableCertShare: with a share of 2, a certificate's third live
// grant is refused (ErrCertShare) while another certificate's is not; a
// share that expires and is swept, or is ended, gives its slot back.
func TestGrantTableCertShare(t *testing.T) {
	tab := NewGrantTable(0)
	tab.SetCertShare(2)
	now := time.Now()
	soon, later := now.Add(time.Second), now.Add(time.Minute)
	grant := func(last byte) Grant {
		return Grant{Source: netip.AddrFrom4([4]byte{198, 18, 0, last}), Proto: packet.TCP, Port: 2000}
	}
	if err := tab.Add(grant(1), testCert(7), soon); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(grant(2), testCert(7), later); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(grant(3), testCert(7), later); err != ErrCertShare {
		t.Errorf("third grant of certificate 7: %v, want ErrCertShare", err)
	}
	if err := tab.Add(grant(3), testCert(8), later); err != nil {
		t.Errorf("certificate 8's grant: %v", err)
	}
	if err := tab.Add(grant(2), testCert(7), later); err != nil {
		t.Errorf("extending an existing grant of certificate 7: %v", err)
	}
	tab.Sweep(now.Add(2 * time.Second)) // grant(1) expires
	if err := tab.Add(grant(4), testCert(7), later); err != nil {
		t.Errorf("after a grant of 7 expired: %v", err)
	}
	if err := tab.Add(grant(2), testCert(8), later); err != nil { // grant(2) is shared with 8
		t.Errorf("certificate 8's share of grant(2): %v", err)
	}
	if err := tab.Add(grant(5), testCert(7), later); err != ErrCertShare {
		t.Errorf("certificate 7 still holds its shares of grant(2) and grant(4): %v, want ErrCertShare", err)
	}
	tab.EndWhere(now, func(g GrantInfo) bool { return g.Cert == testCert(7) && g.Source == grant(2).Source })
	if err := tab.Add(grant(5), testCert(7), later); err != nil {
		t.Errorf("after its share of grant(2) ended, certificate 7 has a slot: %v", err)
	}
	if !tab.Allowed(grant(2).Source, packet.TCP, 2000, now) {
		t.Error("grant(2) closed although certificate 8's share is live")
	}
}
