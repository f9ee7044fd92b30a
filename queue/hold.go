package queue

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of GateConfig's hold fields.
const (
	// DefaultMaxHeld bounds the packets a gate reader holds at once.
	DefaultMaxHeld = 64
	// DefaultHoldTimeout is the longest a packet waits for Release: a
	// knock is decided in well under a millisecond unless the knock
	// workers are backed up, and then the packet is decided as if it had
	// not been held.
	DefaultHoldTimeout = 10 * time.Millisecond
)

// heldPacket is a packet the reader holds: its id and mark, for its
// verdict, and its decoded header (without payload), for Decide.
type heldPacket struct {
	id       uint32
	mark     uint32
	hdr      Header
	deadline time.Time
}

// holdList is a gate reader's held packets. The receive goroutine adds
// them; Release (from any goroutine), the expiry timer and the end of Run
// settle them. n mirrors len(pkts) for readers that must not lock.
type holdList struct {
	g     *GateReader
	mu    sync.Mutex
	n     atomic.Int32
	pkts  []heldPacket // capacity MaxHeld, made once
	timer *time.Timer  // fires at the earliest deadline while pkts is not empty
}

func (l *holdList) init(g *GateReader, max int) {
	l.g = g
	l.pkts = make([]heldPacket, 0, max)
	l.timer = time.AfterFunc(time.Hour, l.expire)
	l.timer.Stop()
}

// maxHeldPerSource bounds the packets held for one source, so that one
// address with knocks in the workers cannot take every slot.
const maxHeldPerSource = 4

// add holds p, whose decoded header is h, unless the list or h.Src's
// share of it is full, no socket is being served, or Hold, asked again
// under the lock, no longer says so.
//
// n goes up before that second ask: the knock's decision (grant in place,
// pending cleared) happens before its Release reads n, so a Release that
// the second ask did not see coming finds n above zero and waits for the
// lock, then settles the packet, instead of leaving it to the timeout.
func (l *holdList) add(p *Packet, h *Header) bool {
	g := l.g
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pkts) == cap(l.pkts) || g.sock == nil || l.heldFrom(h.Src) >= maxHeldPerSource {
		return false
	}
	l.n.Add(1)
	if !g.cfg.Hold(h) {
		l.n.Add(-1)
		return false
	}
	hp := heldPacket{id: p.ID, mark: p.Mark, hdr: *h, deadline: g.cfg.Clock().Add(g.cfg.HoldTimeout)}
	hp.hdr.Payload = nil
	l.pkts = append(l.pkts, hp)
	if len(l.pkts) == 1 {
		l.timer.Reset(g.cfg.HoldTimeout)
	}
	return true
}

// heldFrom counts the packets held for src; l.mu is held.
func (l *holdList) heldFrom(src netip.Addr) int {
	n := 0
	for i := range l.pkts {
		if l.pkts[i].hdr.Src == src {
			n++
		}
	}
	return n
}

// Release decides the packets held for src, now that a knock from src was
// decided, and any whose hold timed out. Any goroutine may call it, at
// any time; it returns at once when nothing is held.
func (g *GateReader) Release(src netip.Addr) {
	if g.held.n.Load() == 0 {
		return
	}
	g.held.settle(src, g.cfg.Clock())
}

// expire is the timer's: it decides the packets whose hold timed out.
func (l *holdList) expire() {
	if l.n.Load() == 0 {
		return
	}
	l.settle(netip.Addr{}, l.g.cfg.Clock())
}

// settle decides, under the lock, every held packet from src that Hold no
// longer holds (src may have another knock pending, for this packet's
// port) and every one past its deadline at now, sends their verdicts one
// by one (a batch verdict could cover packets still held), and keeps the
// rest, re-arming the timer for the earliest remaining deadline.
func (l *holdList) settle(src netip.Addr, now time.Time) {
	g := l.g
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := l.pkts[:0]
	var next time.Time
	for i := range l.pkts {
		hp := &l.pkts[i]
		timedOut := !now.Before(hp.deadline)
		if !timedOut && (hp.hdr.Src != src || g.cfg.Hold(&hp.hdr)) {
			kept = append(kept, *hp)
			if next.IsZero() || hp.deadline.Before(next) {
				next = hp.deadline
			}
			continue
		}
		if timedOut && hp.hdr.Src != src {
			g.stats.HoldTimeouts.Add(1)
		}
		p := Packet{ID: hp.id, Mark: hp.mark}
		kv := g.verdictFor(&p, &hp.hdr)
		if g.sock != nil {
			g.send(hp.id, kv, false)
		}
	}
	clear(l.pkts[len(kept):])
	l.pkts = kept
	l.n.Store(int32(len(kept)))
	if len(kept) == 0 {
		l.timer.Stop()
	} else {
		l.timer.Reset(max(next.Sub(now), time.Microsecond))
	}
}

// forget empties the list when Run ends: the socket is closed, and the
// kernel drops the packets still queued when the queue is unbound.
func (l *holdList) forget() {
	if l.g == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.g.sock = nil
	clear(l.pkts)
	l.pkts = l.pkts[:0]
	l.n.Store(0)
	l.timer.Stop()
}
