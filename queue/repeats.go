package queue

import (
	"hash/maphash"
	"sync/atomic"
	"time"
)

// RepeatWindow is how soon after its repeat a packet seen again counts as
// looping: a repeated packet comes back within microseconds, while the
// sender's own retransmission of a SYN or datagram comes a second or more
// later (and differs in the IPv4 id or TCP timestamp as a rule).
const RepeatWindow = time.Millisecond

// repeatSlots is the size of the Repeats table: a power of two.
const repeatSlots = 1024

// Repeats remembers the packets readers repeated (NF_REPEAT) in the last
// RepeatWindow, so that one coming back to a queue is not repeated again:
// a rule above the gate's jump that rewrites the mark (a CONNMARK
// --restore-mark inserted first, say) strips the signal bit, and the
// packet would otherwise loop between the queue and the rules forever.
//
// It is a fixed table of hashes of whole packets, indexed by the hash: no
// allocation, one atomic word per slot, safe for concurrent use by every
// reader. A collision at worst forgets a repeat, which only lets a looping
// packet around once more.
type Repeats struct {
	slots [repeatSlots]atomic.Uint64 // hash tag << 32 | microsecond stamp | 1
	seed  maphash.Seed               // of the packets' hashes (see hash)
	since func() time.Duration       // monotonic clock
	loops atomic.Uint64
}

// NewRepeats returns an empty table reading the clock now (monotonic, any
// origin); nil now: the process's monotonic clock.
func NewRepeats(now func() time.Duration) *Repeats {
	if now == nil {
		start := time.Now()
		now = func() time.Duration { return time.Since(start) }
	}
	return &Repeats{seed: maphash.MakeSeed(), since: now}
}

// Loops returns how many packets Again found looping.
func (r *Repeats) Loops() uint64 { return r.loops.Load() }

// Again reports whether data, a packet about to be repeated, was repeated
// already within RepeatWindow (and counts it); otherwise it remembers the
// packet and returns false.
func (r *Repeats) Again(data []byte) bool { return r.again(r.hash(data), true) }

// hash is the hash of a whole packet the table keeps. maphash reads the
// packet eight and sixteen bytes at a time (a byte-at-a-time hash cost the
// gate reader about 1 % of its time under a granted flood).
func (r *Repeats) hash(data []byte) uint64 { return maphash.Bytes(r.seed, data) }

// remember records the packet of hash h as repeated now.
func (r *Repeats) remember(h uint64) { r.again(h, false) }

// again is Again for the packet of hash h; count false only records it.
func (r *Repeats) again(h uint64, count bool) bool {
	slot := &r.slots[h&(repeatSlots-1)]
	tag := h >> 32
	stamp := uint32(r.since()/time.Microsecond) | 1
	e := slot.Load()
	if count && e>>32 == tag && e != 0 && stamp-uint32(e) < uint32(RepeatWindow/time.Microsecond) {
		r.loops.Add(1)
		return true
	}
	slot.Store(tag<<32 | uint64(stamp))
	return false
}

// settle returns kv, or kv without its repeat when p is looping.
func (r *Repeats) settle(p *Packet, kv kernelVerdict) (kernelVerdict, bool) {
	if kv.verdict != NFRepeat || !r.Again(p.Data) {
		return kv, false
	}
	return withoutRepeat(kv), true
}
