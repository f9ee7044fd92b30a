package gate

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// Sources that earned a grant recently get precedence when the knock
// reader has to shed (queue.KnockConfig.Priority): under a flood of
// costly knocks from spoofed sources, clients that were let in before
// keep getting in. A spoofed source cannot earn the precedence: it takes
// a grant, so a valid knock naming that source, sent from it.
const (
	// RecentGrantWindow is how long after its last grant a source keeps
	// precedence.
	RecentGrantWindow = 10 * time.Minute
	// recentSlots bounds the sources remembered: a direct-mapped table,
	// where a newer grantee may take an older one's slot.
	recentSlots = 4096
)

// recentGrantees remembers the sources of recent grants, an IPv6 source
// by its /64 (as the knock rate limit counts it). It is fixed in size and
// its lookup does not allocate.
type recentGrantees struct {
	mu    sync.RWMutex
	seed  maphash.Seed
	slots [recentSlots]recentSlot
}

type recentSlot struct {
	addr  [16]byte
	until int64 // Unix nanoseconds; zero: empty
}

func newRecentGrantees() *recentGrantees {
	return &recentGrantees{seed: maphash.MakeSeed()}
}

// prefixOf is the key of a source: an IPv4 address as is (v4-mapped), an
// IPv6 address's /64.
func prefixOf(src netip.Addr) [16]byte {
	b := src.Unmap().As16()
	if src.Unmap().Is6() {
		clear(b[8:])
	}
	return b
}

func (r *recentGrantees) slot(key *[16]byte) *recentSlot {
	return &r.slots[maphash.Bytes(r.seed, key[:])%recentSlots]
}

// add remembers src as granted at now.
func (r *recentGrantees) add(src netip.Addr, now time.Time) {
	key := prefixOf(src)
	r.mu.Lock()
	*r.slot(&key) = recentSlot{addr: key, until: now.Add(RecentGrantWindow).UnixNano()}
	r.mu.Unlock()
}

// has reports whether src earned a grant within RecentGrantWindow of now.
func (r *recentGrantees) has(src netip.Addr, now time.Time) bool {
	key := prefixOf(src)
	r.mu.RLock()
	s := *r.slot(&key)
	r.mu.RUnlock()
	return s.until > now.UnixNano() && s.addr == key
}

// RecentlyGranted reports whether src (an IPv6 source: its /64) earned a
// grant within RecentGrantWindow. The knock reader asks it, on its
// receive goroutine, for every knock (queue.KnockConfig.Priority); it
// does not allocate.
func (e *Engine) RecentlyGranted(src netip.Addr) bool {
	return e.recent.has(src, e.clock())
}
