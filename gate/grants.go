package gate

import (
	"crypto/sha256"
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

func (k grantKey) grant() Grant {
	return Grant{Source: netip.AddrFrom16(k.addr).Unmap(), Proto: k.proto, Port: k.port}
}

const grantShards = 16

// MaxShares bounds the certificates one grant remembers: the people
// behind one shared address (a NAT) who knocked for the same port. When a
// further certificate knocks, the share that ends first is forgotten;
// that never shortens the grant (the newer shares last longer), it only
// means that revoking the forgotten certificate alone no longer closes
// the address, which its neighbours' live shares keep open anyway.
const MaxShares = 4

// GrantTable maps (source, protocol, port) to the shares that keep it
// open: each certificate that earned the grant, with its own expiry. The
// address is open while any share is live; revoking a certificate ends
// its shares only. It is sharded by source so gate lookups on different
// cores rarely share a lock, and bounded: when it holds max grants, a new
// grant is refused (an existing one can still gain or extend a share),
// and the knock is denied as an overload. A source's shard comes from a
// hash keyed with a seed of its own, so no one can choose addresses that
// all land in one shard and fill it.
type GrantTable struct {
	shards   [grantShards]grantShard
	maxShard int
	seed     maphash.Seed
	certs    certRegistry
}

// Errors of GrantTable.Add.
var (
	// ErrGrantsFull: the table (the grant's shard) holds its bound.
	ErrGrantsFull = errors.New("grant table full")
	// ErrCertShare: the certificate holds its share of the table.
	ErrCertShare = errors.New("the certificate holds its share of the grants")
)

// SetCertShare bounds the grant shares one certificate may hold at n
// (zero: no bound); shares beyond it are refused with ErrCertShare. Set
// it before the table is used.
func (t *GrantTable) SetCertShare(n int) { t.certs.max = int32(min(n, 1<<30)) }

type grantShard struct {
	mu     sync.RWMutex
	grants map[grantKey]grantEntry
	// shared holds the shares of the grants that have more than one
	// (a shared address); a grant with one share keeps it in its entry.
	shared map[grantKey][]share
}

// grantEntry is what the table keeps per grant: 28 bytes aligned to 4,
// no pointers, so that with the 20-byte key a map slot is 48 bytes.
type grantEntry struct {
	// expLo and expHi are the grant's expiry (its latest share's) in Unix
	// nanoseconds, split so that the entry needs no 8-byte alignment.
	expLo, expHi uint32
	// cert is the single share's certificate when shares is 1; with more,
	// the shares are in the shard's shared map.
	cert   CertID
	shares uint8
}

func (e grantEntry) expiry() int64 { return int64(uint64(e.expHi)<<32 | uint64(e.expLo)) }

// share is one certificate's part of a grant.
type share struct {
	cert   CertID
	expiry int64 // Unix nanoseconds
}

// sharesLocked returns the shares of k's entry e, in buf.
func (s *grantShard) sharesLocked(k grantKey, e grantEntry, buf *[MaxShares]share) []share {
	if e.shares <= 1 {
		buf[0] = share{cert: e.cert, expiry: e.expiry()}
		return buf[:1]
	}
	return buf[:copy(buf[:], s.shared[k])]
}

// setLocked stores shares as k's grant, or removes it when there are none.
func (s *grantShard) setLocked(k grantKey, shares []share) {
	switch len(shares) {
	case 0:
		delete(s.grants, k)
		delete(s.shared, k)
		return
	case 1:
		delete(s.shared, k)
		exp := shares[0].expiry
		s.grants[k] = grantEntry{expLo: uint32(exp), expHi: uint32(uint64(exp) >> 32), cert: shares[0].cert, shares: 1}
		return
	}
	var exp int64
	for _, sh := range shares {
		exp = max(exp, sh.expiry)
	}
	if s.shared == nil {
		s.shared = make(map[grantKey][]share)
	}
	s.shared[k] = append(s.shared[k][:0], shares...)
	s.grants[k] = grantEntry{expLo: uint32(exp), expHi: uint32(uint64(exp) >> 32), shares: uint8(len(shares))}
}

// CertID names a certificate in the grant table: the first 128 bits of
// the SHA-256 of its DER, so that two certificates never share one (a
// collision would merge their revocation, quotas and listing). The zero
// CertID means none.
type CertID [16]byte

// IsZero reports whether id names no certificate.
func (id CertID) IsZero() bool { return id == CertID{} }

// CertIDOf returns the CertID of the DER certificate der; nil or empty
// der has none.
func CertIDOf(der []byte) CertID {
	if len(der) == 0 {
		return CertID{}
	}
	sum := sha256.Sum256(der)
	return CertID(sum[:16])
}

// EndedGrant is one certificate's share of a grant, ended before its
// expiry because the certificate no longer verifies (revoked, its CA
// revoked or removed, expired) or an operator ended it.
type EndedGrant struct {
	Grant
	// Cert is the certificate whose share ended; Serial and Subject name
	// it when the table knew it (nil and empty otherwise).
	Cert    CertID
	Serial  *big.Int
	Subject string
	// Expiry is when the share would have ended.
	Expiry time.Time
	// StillOpen reports that other certificates' live shares keep the
	// address open (a shared address).
	StillOpen bool
	// Why says why the certificate no longer verifies; nil when an
	// operator ended the share.
	Why error
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

// Add gives the certificate cert (zero: none, and revocation cannot end
// the share) a share of the grant g until the given time, extending its
// existing share (never shortening it). Other certificates' shares of the
// same grant are kept. It returns ErrGrantsFull when the table, and
// ErrCertShare when the certificate's share of it, is full.
func (t *GrantTable) Add(g Grant, cert CertID, until time.Time) error {
	k := keyFor(g.Source.Unmap(), g.Proto, g.Port)
	s := t.shard(&k)
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.grants[k]
	if !ok && len(s.grants) >= t.maxShard {
		return ErrGrantsFull
	}
	if !(ok && s.holdsLocked(k, old, cert)) && !t.certs.take(cert) {
		return ErrCertShare
	}
	t.shareLocked(s, k, cert, until.UnixNano())
	return nil
}

// shareLocked gives cert a share of k's grant in s until exp (Unix
// nanoseconds), extending its existing share (never shortening it); a
// new share's count must have been taken.
func (t *GrantTable) shareLocked(s *grantShard, k grantKey, cert CertID, exp int64) {
	var buf [MaxShares]share
	var shares []share
	if old, ok := s.grants[k]; ok {
		shares = s.sharesLocked(k, old, &buf)
	}
	for i := range shares {
		if shares[i].cert == cert {
			shares[i].expiry = max(shares[i].expiry, exp)
			s.setLocked(k, shares)
			return
		}
	}
	if len(shares) == MaxShares {
		first := 0
		for i := range shares {
			if shares[i].expiry < shares[first].expiry {
				first = i
			}
		}
		t.certs.give(shares[first].cert)
		shares = append(shares[:first], shares[first+1:]...)
	}
	s.setLocked(k, append(shares, share{cert: cert, expiry: exp}))
}

// AddAll gives cert a share of every one of gs until the given time, as
// Add does, or of none of them: the grants of one v2 knock, all for one
// source. It returns ErrGrantsFull or ErrCertShare as Add does, having
// added none.
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
	giveBack := func() {
		for range taken {
			t.certs.give(cert)
		}
	}
	for _, k := range keys {
		old, ok := s.grants[k]
		if !ok {
			fresh++
		}
		if ok && s.holdsLocked(k, old, cert) {
			continue
		}
		if !t.certs.take(cert) {
			giveBack()
			return ErrCertShare
		}
		taken++
	}
	if len(s.grants)+fresh > t.maxShard {
		giveBack()
		return ErrGrantsFull
	}
	for _, k := range keys {
		t.shareLocked(s, k, cert, until.UnixNano())
	}
	return nil
}

// holdsLocked reports whether cert holds a share of k's entry e.
func (s *grantShard) holdsLocked(k grantKey, e grantEntry, cert CertID) bool {
	var buf [MaxShares]share
	for _, sh := range s.sharesLocked(k, e, &buf) {
		if sh.cert == cert {
			return true
		}
	}
	return false
}

// dropExpiredLocked removes the shares that ended by n (Unix nanoseconds),
// giving back their certificates' counts.
func (t *GrantTable) dropExpiredLocked(shares []share, n int64) []share {
	kept := shares[:0]
	for _, sh := range shares {
		if sh.expiry > n {
			kept = append(kept, sh)
			continue
		}
		t.certs.give(sh.cert)
	}
	return kept
}

// End removes the shares of the certificates in ended (with why each no
// longer verifies; nil for none given) and returns those still live at
// now. An address stays open while another certificate's share is live.
func (t *GrantTable) End(ended map[CertID]error, now time.Time) []EndedGrant {
	if len(ended) == 0 {
		return nil
	}
	return t.endShares(now, func(g GrantInfo) (bool, error) {
		why, ok := ended[g.Cert]
		return ok, why
	})
}

// endShares removes every share for which match is true and returns
// those live at now. match runs with a shard's lock held.
func (t *GrantTable) endShares(now time.Time, match func(GrantInfo) (bool, error)) []EndedGrant {
	n := now.UnixNano()
	var ended []EndedGrant
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.grants {
			var buf [MaxShares]share
			shares := s.sharesLocked(k, e, &buf)
			kept := shares[:0]
			first := len(ended)
			for _, sh := range shares {
				info := t.infoOf(k, sh)
				end, why := match(info)
				if !end {
					kept = append(kept, sh)
					continue
				}
				t.certs.give(sh.cert)
				if sh.expiry > n {
					ended = append(ended, EndedGrant{Grant: info.Grant, Cert: sh.cert, Serial: info.Serial, Subject: info.Subject, Expiry: info.Expiry, Why: why})
				}
			}
			if len(kept) == len(shares) {
				continue
			}
			open := false
			for _, sh := range kept {
				open = open || sh.expiry > n
			}
			for j := first; j < len(ended); j++ {
				ended[j].StillOpen = open
			}
			s.setLocked(k, kept)
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

// admit decides h's connection against the grants: when its source holds
// a live grant for its protocol and port, it records the connection in
// conns with the certificates of the grant's live shares and reports
// true; it reports false when there is no live grant or conns is full.
// The record is made under the grant's lock, so that a revocation, which
// ends the shares before it looks for their connections, finds every
// connection a revoked share let in. It does not allocate.
func (t *GrantTable) admit(h *packet.Header, now int64, conns *connTable) (granted, recorded bool) {
	k := keyFor(h.Src.Unmap(), h.Proto, h.DstPort)
	s := t.shard(&k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.grants[k]
	if !ok || e.expiry() <= now {
		return false, false
	}
	if conns == nil {
		return true, true
	}
	var buf [MaxShares]share
	var certs [MaxShares]CertID
	live := 0
	for _, sh := range s.sharesLocked(k, e, &buf) {
		if sh.expiry > now {
			certs[live] = sh.cert
			live++
		}
	}
	return true, conns.record(h, certs[:live], now)
}

// Sweep removes grant shares that expired by now and returns how many
// grants ended with them.
func (t *GrantTable) Sweep(now time.Time) int {
	n := now.UnixNano()
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.grants {
			if e.shares <= 1 && e.expiry() > n {
				continue
			}
			var buf [MaxShares]share
			shares := s.sharesLocked(k, e, &buf)
			kept := t.dropExpiredLocked(shares, n)
			if len(kept) != len(shares) {
				s.setLocked(k, kept)
			}
			if len(kept) == 0 {
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
				f(k.grant(), time.Unix(0, e.expiry()))
			}
		}
		s.mu.RUnlock()
	}
}
