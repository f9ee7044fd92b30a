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
		if !tab.Add(Grant{Source: netip.AddrFrom16(a), Proto: packet.TCP, Port: 2000}, 0, until) {
			refused++
		}
	}
	if refused != 0 {
		t.Errorf("%d of 100 chosen grants refused in a table of %d", refused, grantShards*64)
	}
	if !tab.Add(Grant{Source: netip.MustParseAddr("198.18.0.2"), Proto: packet.TCP, Port: 2000}, 0, until) {
		t.Error("a new client's grant refused")
	}
}
