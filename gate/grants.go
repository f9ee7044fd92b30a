package gate

import (
	"errors"
	"fmt"
	"hash/maphash"
	"math/big"
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

// GrantTable maps (source, protocol, port) to an expiry and the
// certificate that earned the grant (for End). It is sharded by
// source so gate lookups on different cores rarely share a lock, and
// bounded: when it holds max grants, a new grant is refused (an existing
// one can still be extended), and the knock is denied as an overload.
// A source's shard comes from a hash keyed with a seed of its own, so no
// one can choose addresses that all land in one shard and fill it.
type GrantTable struct {
	shards   [grantShards]grantShard
	maxShard int
	seed     maphash.Seed
	share    certShare
}

// Errors of GrantTable.Add.
var (
	// ErrGrantsFull: the table (the grant's shard) holds its bound.
	ErrGrantsFull = errors.New("grant table full")
	// ErrCertShare: the certificate holds its share of the table.
	ErrCertShare = errors.New("the certificate holds its share of the grants")
)

// certShare counts each certificate's grants, so that one certificate
// (an insider knocking from many addresses) cannot fill the table. The
// lock is taken inside a shard's, and only when a grant comes or goes.
type certShare struct {
	mu  sync.Mutex
	max int32 // zero: no bound
	n   map[CertID]int32
}

// take counts one more grant of cert, unless it holds max already.
func (c *certShare) take(cert CertID) bool {
	if cert == 0 {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.n[cert] >= c.max {
		return false
	}
	if c.n == nil {
		c.n = make(map[CertID]int32)
	}
	c.n[cert]++
	return true
}

// give counts one grant of cert less.
func (c *certShare) give(cert CertID) {
	if cert == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[cert] <= 1 {
		delete(c.n, cert)
		return
	}
	c.n[cert]--
}

// SetCertShare bounds the grants one certificate may hold at n (zero: no
// bound); grants beyond it are refused with ErrCertShare. Set it before
// the table is used.
func (t *GrantTable) SetCertShare(n int) { t.share.max = int32(min(n, 1<<30)) }

type grantShard struct {
	mu     sync.RWMutex
	grants map[grantKey]grantEntry
}

// grantEntry is what the table keeps per grant: 12 bytes aligned to 4, no
// pointers, so that with the 20-byte key a map slot stays at 32 bytes, as
// it was with the expiry alone (a million grants: about 80 MB of heap).
type grantEntry struct {
	// expLo and expHi are the expiry in Unix nanoseconds, split so that
	// the entry needs no 8-byte alignment.
	expLo, expHi uint32
	cert         CertID // the certificate that made or last extended the grant
}

func entryOf(expiry int64, cert CertID) grantEntry {
	return grantEntry{expLo: uint32(expiry), expHi: uint32(uint64(expiry) >> 32), cert: cert}
}

func (e grantEntry) expiry() int64 { return int64(uint64(e.expHi)<<32 | uint64(e.expLo)) }

// CertID names a certificate in the grant table by a 32-bit hash of its
// serial, so that a grant costs no more memory than its expiry did;
// revoking a certificate ends the grants of its CertID. Zero means none.
// A collision can only end a grant early (fail closed).
type CertID uint32

// CertIDOf returns serial's CertID (FNV-1a over its big-endian bytes;
// never zero). A nil serial has none.
func CertIDOf(serial *big.Int) CertID {
	if serial == nil {
		return 0
	}
	var buf [32]byte
	var b []byte
	if n := (serial.BitLen() + 7) / 8; n <= len(buf) {
		b = serial.FillBytes(buf[:])[len(buf)-n:]
	} else {
		b = serial.Bytes()
	}
	h := uint32(2166136261) // FNV-1a, inline: no allocation
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return CertID(max(h, 1))
}

// EndedGrant is a grant ended before its expiry because the certificate
// that made it was revoked.
type EndedGrant struct {
	Grant
	// Serial is the revoked certificate's serial.
	Serial *big.Int
	// Expiry is when the grant would have ended.
	Expiry time.Time
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
		t.shards[i].grants = make(map[grantKey]grantEntry)
	}
	return t
}

// shard returns k's shard: a keyed hash of its source address.
func (t *GrantTable) shard(k *grantKey) *grantShard {
	return &t.shards[maphash.Bytes(t.seed, k.addr[:])%grantShards]
}

// Add grants g until the given time, extending an existing grant (never
// shortening it), for the certificate cert (zero: none, and revocation
// cannot end the grant); the grant belongs to the certificate that knocked
// last. It returns ErrGrantsFull when the table, and ErrCertShare when
// the certificate's share of it, is full.
func (t *GrantTable) Add(g Grant, cert CertID, until time.Time) error {
	k := keyFor(g.Source.Unmap(), g.Proto, g.Port)
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.grants[k]
	switch {
	case !ok && len(s.grants) >= t.maxShard:
		return ErrGrantsFull
	case !ok || old.cert != cert:
		if !t.share.take(cert) {
			return ErrCertShare
		}
		if ok {
			t.share.give(old.cert)
		}
	}
	s.grants[k] = entryOf(max(until.UnixNano(), old.expiry()), cert)
	return nil
}

// AddAll grants every one of gs until the given time, as Add does, or
// none of them: the grants of one v2 knock, all for one source. It
// returns ErrGrantsFull or ErrCertShare as Add does, having added none.
func (t *GrantTable) AddAll(gs []Grant, cert CertID, until time.Time) error {
	if len(gs) == 0 {
		return nil
	}
	keys := make([]grantKey, len(gs))
	for i, g := range gs {
		if g.Source != gs[0].Source {
			return fmt.Errorf("grant table: AddAll for %s and %s: one source only", gs[0].Source, g.Source)
		}
		keys[i] = keyFor(g.Source.Unmap(), g.Proto, g.Port)
	}
	s := t.shard(&keys[0]) // one source: one shard
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh, taken := 0, 0
	for _, k := range keys {
		old, ok := s.grants[k]
		if !ok {
			fresh++
		}
		if !ok || old.cert != cert {
			if !t.share.take(cert) {
				for range taken {
					t.share.give(cert)
				}
				return ErrCertShare
			}
			taken++
		}
	}
	if len(s.grants)+fresh > t.maxShard {
		for range taken {
			t.share.give(cert)
		}
		return ErrGrantsFull
	}
	for _, k := range keys {
		old, ok := s.grants[k]
		if ok && old.cert != cert {
			t.share.give(old.cert)
		}
		s.grants[k] = entryOf(max(until.UnixNano(), old.expiry()), cert)
	}
	return nil
}

// End removes every grant whose certificate is in revoked and returns
// those that were still live at now, with the serial revoked names.
func (t *GrantTable) End(revoked map[CertID]*big.Int, now time.Time) []EndedGrant {
	if len(revoked) == 0 {
		return nil
	}
	n := now.UnixNano()
	var ended []EndedGrant
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.grants {
			serial, ok := revoked[e.cert]
			if !ok {
				continue
			}
			delete(s.grants, k)
			t.share.give(e.cert)
			if e.expiry() > n {
				ended = append(ended, EndedGrant{
					Grant:  Grant{Source: netip.AddrFrom16(k.addr).Unmap(), Proto: k.proto, Port: k.port},
					Serial: serial,
					Expiry: time.Unix(0, e.expiry()),
				})
			}
		}
		s.mu.Unlock()
	}
	return ended
}

// Allowed reports whether src holds a live grant for proto
// and port at now. It does not allocate.
func (t *GrantTable) Allowed(src netip.Addr, proto packet.Proto, port uint16, now time.Time) bool {
	k := keyFor(src.Unmap(), proto, port)
	s := t.shard(&k)
	s.mu.RLock()
	e, ok := s.grants[k]
	s.mu.RUnlock()
	return ok && e.expiry() > now.UnixNano()
}

// Sweep removes grants that expired by now and returns how many.
func (t *GrantTable) Sweep(now time.Time) int {
	n := now.UnixNano()
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.grants {
			if e.expiry() <= n {
				delete(s.grants, k)
				t.share.give(e.cert)
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
		n += len(s.grants)
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
		for k, e := range s.grants {
			if e.expiry() > n {
				f(Grant{Source: netip.AddrFrom16(k.addr).Unmap(), Proto: k.proto, Port: k.port}, time.Unix(0, e.expiry()))
			}
		}
		s.mu.RUnlock()
	}
}
