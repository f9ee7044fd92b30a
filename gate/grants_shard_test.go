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
		if tab.Add(Grant{Source: netip.AddrFrom16(a), Proto: packet.TCP, Port: 2000}, 0, until) != nil {
			refused++
		}
	}
	if refused != 0 {
		t.Errorf("%d of 100 chosen grants refused in a table of %d", refused, grantShards*64)
	}
	if tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.2"), Proto: packet.TCP, Port: 2000}, 0, until) != nil {
		t.Error("a new client's grant refused")
	}
}

// TestGrantTableCertShare: with a share of 2, a certificate's third live
// grant is refused (ErrCertShare) while another certificate's is not; a
// grant that expires and is swept, or passes to another certificate,
// gives its slot back.
func TestGrantTableCertShare(t *testing.T) {
	tab := NewGrantTable(0)
	tab.SetCertShare(2)
	now := time.Now()
	soon, later := now.Add(time.Second), now.Add(time.Minute)
	grant := func(last byte) Grant {
		return Grant{Source: netip.AddrFrom4([4]byte{198, 18, 0, last}), Proto: packet.TCP, Port: 2000}
	}
	if err := tab.Add(grant(1), 7, soon); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(grant(2), 7, later); err != nil {
		t.Fatal(err)
	}
	if err := tab.Add(grant(3), 7, later); err != ErrCertShare {
		t.Errorf("third grant of certificate 7: %v, want ErrCertShare", err)
	}
	if err := tab.Add(grant(3), 8, later); err != nil {
		t.Errorf("certificate 8's grant: %v", err)
	}
	if err := tab.Add(grant(2), 7, later); err != nil {
		t.Errorf("extending an existing grant of certificate 7: %v", err)
	}
	tab.Sweep(now.Add(2 * time.Second)) // grant(1) expires
	if err := tab.Add(grant(4), 7, later); err != nil {
		t.Errorf("after a grant of 7 expired: %v", err)
	}
	if err := tab.Add(grant(2), 8, later); err != nil { // grant(2) passes to 8
		t.Errorf("grant(2) passing to certificate 8: %v", err)
	}
	if err := tab.Add(grant(5), 7, later); err != nil {
		t.Errorf("after grant(2) passed to 8, certificate 7 has a slot: %v", err)
	}
}
