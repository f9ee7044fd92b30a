package gate

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// pendingKnocks counts, per source, the knocks waiting for or in the hands
// of a knock worker, and the packets of that source deferred to the Holder
// meanwhile. While a source has a knock pending, the gate may defer its
// packets (Engine.Verdict) instead of denying them a moment before the
// grant, up to a bound per source and in all, so that deferring stays as
// cheap as the bound under any flood. The knock reader's backlog bounds
// the map.
type pendingKnocks struct {
	total atomic.Int64 // knocks pending, summed: the lock-free fast path
	mu    sync.Mutex
	by    map[netip.Addr]pendingEntry
	held  int32 // deferred packets not yet settled, summed over by
}

// pendingEntry is one source's knocks pending and packets deferred.
type pendingEntry struct {
	knocks, held int32
}

func (p *pendingKnocks) add(src netip.Addr) {
	p.mu.Lock()
	if p.by == nil {
		p.by = make(map[netip.Addr]pendingEntry)
	}
	e := p.by[src]
	e.knocks++
	p.by[src] = e
	p.total.Add(1)
	p.mu.Unlock()
}

// done removes one knock of src and reports whether there was one.
func (p *pendingKnocks) done(src netip.Addr) bool {
	if p.total.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.by[src]
	if e.knocks == 0 {
		return false
	}
	e.knocks--
	p.storeLocked(src, e)
	p.total.Add(-1)
	return true
}

// has reports whether src has a knock pending; one atomic load when no
// source has.
func (p *pendingKnocks) has(src netip.Addr) bool {
	if p.total.Load() == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.by[src].knocks > 0
}

// tryDefer takes a deferral slot for a packet of src if src has a knock
// pending and holds fewer than perSource packets, and fewer than total are
// held in all; full reports a pending knock whose packet found no slot.
// Each success is paired with one undefer.
func (p *pendingKnocks) tryDefer(src netip.Addr, perSource, total int32) (ok, full bool) {
	if p.total.Load() == 0 {
		return false, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.by[src]
	switch {
	case e.knocks == 0:
		return false, false
	case e.held >= perSource || p.held >= total:
		return false, true
	}
	e.held++
	p.by[src] = e
	p.held++
	return true, false
}

// undefer gives back a deferral slot of src.
func (p *pendingKnocks) undefer(src netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.by[src]
	if !ok || e.held == 0 {
		return // forgotten by resetDeferred
	}
	e.held--
	p.held--
	p.storeLocked(src, e)
}

// resetDeferred forgets every deferral slot: the Holder calls it when it
// has held nothing for a long while, so that a deferred packet that never
// reached it (a refused verdict) cannot keep a slot for good.
func (p *pendingKnocks) resetDeferred() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == 0 {
		return
	}
	for src, e := range p.by {
		e.held = 0
		p.storeLocked(src, e)
	}
	p.held = 0
}

// storeLocked stores e for src, or deletes src's entry when it is empty.
func (p *pendingKnocks) storeLocked(src netip.Addr, e pendingEntry) {
	if e == (pendingEntry{}) {
		delete(p.by, src)
		return
	}
	p.by[src] = e
}
