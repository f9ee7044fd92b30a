package gate

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"

	"sknock/packet"
)

// Conn is one connection the gate let in, by the exact tuple of its first
// packet as the gate saw it (mangle PREROUTING: before this host's NAT,
// which is also conntrack's original direction).
type Conn struct {
	Proto    packet.Proto
	Src, Dst netip.AddrPort
}

// String returns "tcp 198.18.0.2:40000 -> 198.18.0.1:22".
func (c Conn) String() string {
	return c.Proto.String() + " " + c.Src.String() + " -> " + c.Dst.String()
}

// header returns the packet header of c's first packet, as the gate
// decides on it.
func (c Conn) header() packet.Header {
	return packet.Header{Proto: c.Proto, Src: c.Src.Addr().Unmap(), Dst: c.Dst.Addr().Unmap(),
		SrcPort: c.Src.Port(), DstPort: c.Dst.Port()}
}

// connKey is a Conn without pointers: addresses in 16-byte form.
type connKey struct {
	src, dst     [16]byte
	sport, dport uint16
	proto        packet.Proto
}

// equal reports whether k and o are the same tuple, field by field: the
// compiler's comparison of the whole struct calls memequal, a third of a
// lookup's time.
func (k *connKey) equal(o *connKey) bool {
	return k.sport == o.sport && k.dport == o.dport && k.proto == o.proto && k.src == o.src && k.dst == o.dst
}

func connKeyOf(c Conn) connKey {
	return connKey{
		src: c.Src.Addr().Unmap().As16(), dst: c.Dst.Addr().Unmap().As16(),
		sport: c.Src.Port(), dport: c.Dst.Port(), proto: c.Proto,
	}
}

func connKeyOfHeader(h *packet.Header) connKey {
	return connKey{src: h.Src.Unmap().As16(), dst: h.Dst.Unmap().As16(), sport: h.SrcPort, dport: h.DstPort, proto: h.Proto}
}

func (k connKey) conn() Conn {
	return Conn{
		Proto: k.proto,
		Src:   netip.AddrPortFrom(netip.AddrFrom16(k.src).Unmap(), k.sport),
		Dst:   netip.AddrPortFrom(netip.AddrFrom16(k.dst).Unmap(), k.dport),
	}
}

// connRecord is one recorded connection: its tuple, when its first packet
// was accepted, and the certificates whose live shares of the grant
// admitted it (128 bytes, no pointers). Records start on 128-byte
// boundaries (the table's memory is page-aligned), and the first 64 bytes
// hold the tuple, the count and the first certificate: finding a tuple,
// and a retransmitted first packet under one share, read one cache line.
// Only certs[:n] is meaningful; the rest may hold an earlier record's.
type connRecord struct {
	key   connKey // 38 bytes
	n     uint8   // certificates in certs; zero: the slot is free
	at    int64   // Unix nanoseconds of the first accepted packet
	certs [MaxShares]CertID
	_     [16]byte
}

func (r *connRecord) attributedTo(set map[CertID]error) bool {
	for _, c := range r.certs[:r.n] {
		if _, ok := set[c]; ok {
			return true
		}
	}
	return false
}

// DefaultMaxConns is the connection table's bound when none is given:
// about 17 MB of records (128 bytes each) and 4 MB of index (8 bytes a
// slot), allocated at the first grant and present in memory from then on.
const DefaultMaxConns = 1 << 17

const connShards = 16

// connTable records the connections the gate let in and whom each is
// attributed to, so that revocation ends exactly the connections of the
// revoked certificates. It is preallocated and bounded: recording a
// connection never allocates, and when a shard is full the connection is
// refused (fail closed: a connection no revocation could find is never
// let in) until pruning (Engine.PruneConns) or ended connections
// (Engine.ForgetConn) make room.
type connTable struct {
	seed   [5]uint64 // random: the hash's key
	shards [connShards]connShard
	// full signals that a connection was refused for want of room (a
	// prune is due); capacity 1, sent without blocking.
	full chan struct{}
}

// connShard is an open-addressing hash table (linear probing) of indices
// into a fixed array of records, with a free list. Each index slot holds
// the record's index and 32 bits of its hash (see slotOf), so that a
// lookup compares records only when their hashes agree: under a flood of
// new tuples it reads one index slot, not a record per probe, and a
// removal moves entries back without hashing their records again.
type connShard struct {
	mu    sync.Mutex
	recs  []connRecord
	index []uint64 // 0: empty slot; length a power of two, at least twice len(recs)
	free  []int32  // indices of free records
	// changes counts the shard's changes (a record made, extended or
	// removed), so that a save can tell whether anything changed.
	changes uint64
}

// slotOf is the index slot value for record r of hash h: the 32 bits of
// h that place it (its home slot is their low bits), then r+1.
func slotOf(h uint64, r int32) uint64 { return uint64(uint32(h>>8))<<32 | uint64(r+1) }

// slotRecord is the record index an occupied slot value holds.
func slotRecord(v uint64) int32 { return int32(uint32(v)) - 1 }

// slotHome is the home slot of an occupied slot value, under mask.
func slotHome(v uint64, mask int) int { return int(v>>32) & mask }

func newConnTable(max int) *connTable {
	if max <= 0 {
		max = DefaultMaxConns
	}
	// Each shard has room for its part and four standard deviations of
	// the hash's spread, so that max connections fit.
	per := (max + connShards - 1) / connShards
	per += 4*int(math.Sqrt(float64(per))) + 1
	slots := 1
	for slots < 2*per {
		slots <<= 1
	}
	t := &connTable{full: make(chan struct{}, 1)}
	for i := range t.seed {
		t.seed[i] = rand.Uint64()
	}
	// Every record made is a lookup at a random place in these arrays,
	// and under a flood of new connections that lookup is most of the
	// record's cost: they live in memory of their own (huge pages, present
	// from the start, on Linux), not on the heap's small pages.
	recs, freeRecs := residentSlice[connRecord](connShards * per)
	index, freeIndex := residentSlice[uint64](connShards * slots)
	runtime.AddCleanup(t, func(free [2]func()) { free[0](); free[1]() }, [2]func(){freeRecs, freeIndex})
	for i := range t.shards {
		s := &t.shards[i]
		s.recs = recs[i*per : (i+1)*per : (i+1)*per]
		s.index = index[i*slots : (i+1)*slots : (i+1)*slots]
		s.free = make([]int32, per)
		for j := range s.free {
			s.free[j] = int32(per - 1 - j)
		}
	}
	return t
}

// hash returns k's hash, keyed with the table's random seed so that no
// one can choose tuples that collide. It is wyhash's mixing (a 128-bit
// product folded to 64 bits), the hash Go's own maps fall back to, over
// the key's five words: no copy, no call.
func (t *connTable) hash(k *connKey) uint64 {
	le := binary.LittleEndian
	h := mix(le.Uint64(k.src[:8])^t.seed[0], le.Uint64(k.src[8:])^t.seed[1])
	h = mix(h^le.Uint64(k.dst[:8])^t.seed[2], le.Uint64(k.dst[8:])^t.seed[3])
	ports := uint64(k.sport)<<24 | uint64(k.dport)<<8 | uint64(k.proto)
	return mix(h^ports^t.seed[4], t.seed[0]^t.seed[2])
}

// mix folds the 128-bit product of a and b to 64 bits.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// shardOf returns the shard of hash h.
func (t *connTable) shardOf(h uint64) *connShard { return &t.shards[h%connShards] }

// lock locks k's shard and finds k in it: the index slot holding it, or
// the empty slot where it would go. The caller unlocks the shard.
func (t *connTable) lock(k *connKey) (s *connShard, h uint64, slot int, found bool) {
	h = t.hash(k)
	s = t.shardOf(h)
	s.mu.Lock()
	slot, found = s.findLocked(k, h)
	return s, h, slot, found
}

// findLocked returns the index slot holding k, or the empty slot where it
// would go, and whether it was found.
func (s *connShard) findLocked(k *connKey, h uint64) (slot int, found bool) {
	mask := len(s.index) - 1
	tag := uint32(h >> 8)
	for i := int(tag) & mask; ; i = (i + 1) & mask {
		v := s.index[i]
		if v == 0 {
			return i, false
		}
		if uint32(v>>32) == tag && s.recs[slotRecord(v)].key.equal(k) {
			return i, true
		}
	}
}

// removeLocked empties index slot i and shifts the following entries of
// its cluster back, so that no lookup stops early (no tombstones).
func (s *connShard) removeLocked(i int) {
	mask := len(s.index) - 1
	r := slotRecord(s.index[i])
	s.recs[r].n = 0 // no more: a record is written field by field when made
	s.free = append(s.free, r)
	s.index[i] = 0
	s.changes++
	for j := (i + 1) & mask; ; j = (j + 1) & mask {
		v := s.index[j]
		if v == 0 {
			return
		}
		home := slotHome(v, mask)
		// Move j's entry to the hole at i when its home is not in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			s.index[i] = v
			s.index[j] = 0
			i = j
		}
	}
}

// record notes h's connection as admitted at now by the shares of certs;
// a connection already recorded (a retransmitted first packet) gains the
// certificates it lacked, up to MaxShares. It reports false when the
// shard is full. It does not allocate.
func (t *connTable) record(h *packet.Header, certs []CertID, now int64) bool {
	k := connKeyOfHeader(h)
	s, hash, slot, found := t.lock(&k)
	defer s.mu.Unlock()
	if found {
		rec := &s.recs[slotRecord(s.index[slot])]
		for _, c := range certs {
			if int(rec.n) < MaxShares && !containsCert(rec.certs[:rec.n], c) {
				rec.certs[rec.n] = c
				rec.n++
				s.changes++
			}
		}
		return true
	}
	if len(s.free) == 0 {
		select {
		case t.full <- struct{}{}:
		default:
		}
		return false
	}
	r := s.free[len(s.free)-1]
	s.free = s.free[:len(s.free)-1]
	// Field by field, so that a record under one share writes only its
	// first cache line.
	rec := &s.recs[r]
	rec.key, rec.at = k, now
	rec.n = uint8(copy(rec.certs[:], certs))
	if rec.n == 0 {
		rec.n, rec.certs[0] = 1, CertID{} // a grant without a certificate: recorded, attributed to none
	}
	s.index[slot] = slotOf(hash, r)
	s.changes++
	return true
}

func containsCert(certs []CertID, c CertID) bool {
	for _, x := range certs {
		if x == c {
			return true
		}
	}
	return false
}

// holds reports whether c is recorded.
func (t *connTable) holds(c Conn) bool {
	k := connKeyOf(c)
	s, _, _, found := t.lock(&k)
	s.mu.Unlock()
	return found
}

// forget removes c's record, if any, and reports whether there was one.
func (t *connTable) forget(c Conn) bool {
	k := connKeyOf(c)
	s, _, slot, found := t.lock(&k)
	defer s.mu.Unlock()
	if found {
		s.removeLocked(slot)
	}
	return found
}

// removeWhere removes every record for which drop is true and returns
// their connections when collect is set. drop runs with a shard's lock
// held.
func (t *connTable) removeWhere(drop func(*connRecord) bool, collect bool) (removed []Conn, n int) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for slot := 0; slot < len(s.index); {
			v := s.index[slot]
			if v == 0 || !drop(&s.recs[slotRecord(v)]) {
				slot++
				continue
			}
			if collect {
				removed = append(removed, s.recs[slotRecord(v)].key.conn())
			}
			n++
			s.removeLocked(slot) // may move a later entry into slot: look at it again
		}
		s.mu.Unlock()
	}
	return removed, n
}

// end removes and returns the connections attributed to any certificate
// of ended.
func (t *connTable) end(ended map[CertID]error) []Conn {
	if len(ended) == 0 {
		return nil
	}
	conns, _ := t.removeWhere(func(r *connRecord) bool { return r.attributedTo(ended) }, true)
	return conns
}

// prune removes the records of connections first accepted before the
// time before (Unix nanoseconds) that live does not hold, and returns how
// many went.
func (t *connTable) prune(live map[Conn]struct{}, before int64) int {
	_, n := t.removeWhere(func(r *connRecord) bool {
		if r.at >= before {
			return false
		}
		_, ok := live[r.key.conn()]
		return !ok
	}, false)
	return n
}

// attributed returns every certificate a recorded connection names.
func (t *connTable) attributed() map[CertID]bool {
	out := map[CertID]bool{}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for i := range s.index {
			if v := s.index[i]; v != 0 {
				rec := &s.recs[slotRecord(v)]
				for _, c := range rec.certs[:rec.n] {
					out[c] = true
				}
			}
		}
		s.mu.Unlock()
	}
	return out
}

// changes returns a number that grows with every change to the record.
func (t *connTable) changes() uint64 {
	var n uint64
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += s.changes
		s.mu.Unlock()
	}
	return n
}

// copyShard appends shard i's records to dst, under the shard's lock
// only for the copy, and returns it.
func (t *connTable) copyShard(i int, dst []connRecord) []connRecord {
	s := &t.shards[i]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.index {
		if v != 0 {
			dst = append(dst, s.recs[slotRecord(v)])
		}
	}
	return dst
}

// len returns how many connections are recorded.
func (t *connTable) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.recs) - len(s.free)
		s.mu.Unlock()
	}
	return n
}
