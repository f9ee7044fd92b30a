package gate

import (
	"crypto/sha256"
	"sync"
	"time"

	"sknock/knock"
)

// ReplayKey identifies a knock by what its secret and signature bind:
// for v1, the SHA-256 of the header, the ciphertext and the X coordinate
// of the ephemeral key. Not the whole datagram: v1's shared secret is
// only the X coordinate of the ECDH result, so replacing the ephemeral
// key's Y with p−Y (the negated point) decrypts to the same knock in a
// different datagram, which must count as the same knock. Any other
// change to a valid knock breaks its decryption or signature.
type ReplayKey [sha256.Size]byte

// KeyOf returns the replay key of a v1 datagram: the hash of everything
// but the ephemeral key's Y coordinate (the datagram's last 32 bytes).
// A datagram too short to hold a key is hashed whole.
func KeyOf(datagram []byte) ReplayKey {
	if len(datagram) < knock.PublicKeySize {
		return sha256.Sum256(datagram)
	}
	return sha256.Sum256(datagram[:len(datagram)-ephemeralYSize])
}

// ephemeralYSize is the size of the Y coordinate that ends an uncompressed
// P-256 point, and so every v1 datagram.
const ephemeralYSize = (knock.PublicKeySize - 1) / 2

// datagramHash names a datagram by all its bytes: the outcome cache's key.
// The outcome cache must not use the replay key: a copy with a damaged Y
// has the replay key of the genuine knock but fails to open, and its
// cached failure would then refuse the genuine knock.
func datagramHash(datagram []byte) ReplayKey { return sha256.Sum256(datagram) }

// ReplayCache remembers granted knocks until their timestamp leaves the
// tolerance window, after which the timestamp check refuses them anyway.
// It is bounded: when it holds max entries after sweeping the expired
// ones, Add refuses, and the knock is denied as an overload rather than
// granted without replay protection (fail closed). Only knocks that passed
// every other check are added, so filling it takes that many valid,
// distinct, fresh knocks from certificates the CA issued.
type ReplayCache struct {
	mu      sync.Mutex
	seen    map[ReplayKey]int64 // key → expiry, Unix nanoseconds
	max     int
	nextGC  int64
	gcEvery time.Duration
}

// DefaultReplayEntries is the replay cache's bound when none is given.
const DefaultReplayEntries = 1 << 20

// NewReplayCache returns a cache holding at most max entries (max ≤ 0
// means DefaultReplayEntries).
func NewReplayCache(max int) *ReplayCache {
	if max <= 0 {
		max = DefaultReplayEntries
	}
	return &ReplayCache{seen: make(map[ReplayKey]int64), max: max, gcEvery: time.Second}
}

// Seen reports whether key is remembered and still within its window.
func (c *ReplayCache) Seen(key ReplayKey, now time.Time) bool {
	c.mu.Lock()
	exp, ok := c.seen[key]
	c.mu.Unlock()
	return ok && exp > now.UnixNano()
}

// AddResult is what Add did.
type AddResult uint8

// The outcomes of Add.
const (
	Added   AddResult = iota // key is new and now remembered
	Present                  // key was already remembered: a replay
	Full                     // the cache is full: refuse the knock
)

// Add remembers key until expiry unless it is already there. It is the
// atomic "first one wins" step that makes two concurrent copies of one
// datagram yield a single grant.
func (c *ReplayCache) Add(key ReplayKey, expiry, now time.Time) AddResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := now.UnixNano()
	if exp, ok := c.seen[key]; ok && exp > n {
		return Present
	}
	if len(c.seen) >= c.max || n >= c.nextGC {
		c.sweepLocked(n)
		c.nextGC = n + int64(c.gcEvery)
	}
	if len(c.seen) >= c.max {
		return Full
	}
	c.seen[key] = expiry.UnixNano()
	return Added
}

// Extend pushes every remembered knock's expiry d later. After a reload
// that widens the timestamp tolerance by d, a knock remembered under the
// narrower one stays remembered for as long as the wider one would accept
// it (a knock stamped ahead of the clock is, for up to the new tolerance).
func (c *ReplayCache) Extend(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, exp := range c.seen {
		c.seen[k] = exp + int64(d)
	}
}

// Len returns the number of remembered knocks, expired ones included
// until the next sweep.
func (c *ReplayCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

func (c *ReplayCache) sweepLocked(now int64) {
	for k, exp := range c.seen {
		if exp <= now {
			delete(c.seen, k)
		}
	}
}

// ReplayEntry is one remembered knock: its replay key and when it stops
// needing replay protection (ReplayExpiry of its timestamp).
type ReplayEntry struct {
	Key    ReplayKey
	Expiry time.Time
}

// ReplayCoverage says what a replay memory kept outside the engine (the
// daemon's replay file) vouches for: every knock sealed at or after Since
// (whole seconds) that was granted is among its entries, each remembered
// under a timestamp tolerance of at least Tolerance. An engine that loads
// it (Engine.LoadReplay) refuses knocks sealed before Since, as it refuses
// knocks sealed before its own start without one.
type ReplayCoverage struct {
	Since     time.Time
	Tolerance time.Duration
}

// load adds the entries still within their window at now and reports
// whether all of those fit. An entry already there keeps the later expiry.
func (c *ReplayCache) load(entries []ReplayEntry, now time.Time) (added int, fits bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := now.UnixNano()
	c.sweepLocked(n)
	for _, e := range entries {
		exp := e.Expiry.UnixNano()
		if exp <= n {
			continue
		}
		if old, ok := c.seen[e.Key]; ok {
			c.seen[e.Key] = max(old, exp)
			continue
		}
		if len(c.seen) >= c.max {
			return added, false
		}
		c.seen[e.Key] = exp
		added++
	}
	return added, true
}
