package gate

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// pendingKnocks counts, per source, the knocks waiting for or in the hands
// of a knock worker. While a source has one, the gate may hold its packets
// for that knock's decision (Engine.Hold) instead of denying them a moment
// before the grant. The knock reader's backlog bounds the map.
type pendingKnocks struct {
	total atomic.Int64 // sum of by: Hold's lock-free fast path
	mu    sync.Mutex
	by    map[netip.Addr]int32
}

func (p *pendingKnocks) add(src netip.Addr) {
	p.mu.Lock()
	if p.by == nil {
		p.by = make(map[netip.Addr]int32)
	}
	p.by[src]++
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
	n := p.by[src]
	if n == 0 {
		return false
	}
	if n == 1 {
		delete(p.by, src)
	} else {
		p.by[src] = n - 1
	}
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
	return p.by[src] > 0
}
