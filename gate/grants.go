package gate

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	"sknock/packet"
)

// Grant is what a knock opens: one protocol and port, for one source.
type Grant struct {
	// Source is the address the grant is for (IPv4 sources unmapped).
	Source netip.Addr
	// Proto and Port are what it opens.
	Proto packet.Proto
	Port  uint16
}

// grantKey is a Grant as a map key without pointers, so a million grants
// cost the garbage collector nothing to scan. IPv4 sources are stored
// v4-mapped; the gate asks with the same form.
type grantKey struct {
	addr  [16]byte
	proto packet.Proto
	port  uint16
}

func keyFor(src netip.Addr, proto packet.Proto, port uint16) grantKey {
	return grantKey{addr: src.As16(), proto: proto, port: port}
}

const grantShards = 16

// GrantTable maps (source, protocol, port) to an expiry. It is sharded by
// source so gate lookups on different cores rarely share a lock, and
// bounded: when it holds max grants, a new grant is refused (an existing
// one can still be extended), and the knock is denied as an overload.
// A source's shard comes from a hash keyed with a seed of its own, so no
// one can choose addresses that all land in one shard and fill it.
type GrantTable struct {
	shards   [grantShards]grantShard
	maxShard int
	seed     maphash.Seed
}

type grantShard struct {
	mu     sync.RWMutex
	expiry map[grantKey]int64 // Unix nanoseconds
}

// DefaultMaxGrants is the grant table's bound when none is given.
const DefaultMaxGrants = 4 << 20

// NewGrantTable returns a table holding at most about max grants (max ≤ 0
// means DefaultMaxGrants; the bound is enforced per shard, max/16 each).
func NewGrantTable(max int) *GrantTable {
	if max <= 0 {
		max = DefaultMaxGrants
	}
	t := &GrantTable{maxShard: (max + grantShards - 1) / grantShards, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].expiry = make(map[grantKey]int64)
	}
	return t
}

// shard returns k's shard: a keyed hash of its source address.
func (t *GrantTable) shard(k *grantKey) *grantShard {
	return &t.shards[maphash.Bytes(t.seed, k.addr[:])%grantShards]
}

// Add grants g until the given time, extending an existing grant (never
// shortening it). It returns false when the table is full.
func (t *GrantTable) Add(g Grant, until time.Time) bool {
	k := keyFor(g.Source.Unmap(), g.Proto, g.Port)
	s := t.shard(&k)
	exp := until.UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.expiry[k]
	if !ok && len(s.expiry) >= t.maxShard {
		return false
	}
	if exp > old {
		s.expiry[k] = exp
	}
	return true
}

// Allowed reports whether src holds a live grant for proto
// and port at now. It does not allocate.
func (t *GrantTable) Allowed(src netip.Addr, proto packet.Proto, port uint16, now time.Time) bool {
	k := keyFor(src.Unmap(), proto, port)
	s := t.shard(&k)
	s.mu.RLock()
	exp, ok := s.expiry[k]
	s.mu.RUnlock()
	return ok && exp > now.UnixNano()
}

// Sweep removes grants that expired by now and returns how many.
func (t *GrantTable) Sweep(now time.Time) int {
	n := now.UnixNano()
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, exp := range s.expiry {
			if exp <= n {
				delete(s.expiry, k)
				removed++
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// Len returns the number of grants held, expired ones included until the
// next Sweep.
func (t *GrantTable) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		n += len(s.expiry)
		s.mu.RUnlock()
	}
	return n
}

// Each calls f for every live grant at now, for listing. It holds one
// shard's lock at a time; f must not call back into the table.
func (t *GrantTable) Each(now time.Time, f func(g Grant, expiry time.Time)) {
	n := now.UnixNano()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for k, exp := range s.expiry {
			if exp > n {
				f(Grant{Source: netip.AddrFrom16(k.addr).Unmap(), Proto: k.proto, Port: k.port}, time.Unix(0, exp))
			}
		}
		s.mu.RUnlock()
	}
}
