package gate

import (
	"math/big"
	"net/netip"
	"time"
)

// Ended is what a revocation or an operator ended: the grant shares, and
// the connections attributed to their certificates, which the caller
// must end in the kernel.
type Ended struct {
	Grants []EndedGrant
	Conns  []Conn
}

// rejudge verifies every known certificate (those behind grant shares and
// recorded connections) under t and ends what no longer verifies.
func (e *Engine) rejudge(t *Trust) Ended {
	if t.Verifier == nil {
		return Ended{}
	}
	now := e.clock()
	refused := map[CertID]error{}
	for id, c := range e.grants.certs.known() {
		if err := c.verify(t.Verifier, now); err != nil {
			refused[id] = err
		}
	}
	return e.endCerts(refused, now)
}

// endCerts ends the grant shares of the certificates in refused and every
// connection attributed to any of them.
func (e *Engine) endCerts(refused map[CertID]error, now time.Time) Ended {
	if len(refused) == 0 {
		return Ended{}
	}
	ended := Ended{Grants: e.grants.End(refused, now)}
	if c := e.conns.Load(); c != nil {
		ended.Conns = c.end(refused)
	}
	return ended
}

// Selection is what an operator ends: exactly one of a source address
// (every share of its grants, and every connection from it), a serial
// (the shares of the certificates with that serial, and every connection
// attributed to them), or all.
type Selection struct {
	Source netip.Addr
	Serial *big.Int
	All    bool
}

// EndGrants ends what sel selects and returns it. It ends grants, not
// certificates: the clients may knock again.
func (e *Engine) EndGrants(sel Selection) Ended {
	now := e.clock()
	conns := e.conns.Load()
	switch {
	case sel.All:
		ended := Ended{Grants: e.grants.EndWhere(now, func(GrantInfo) bool { return true })}
		if conns != nil {
			ended.Conns, _ = conns.removeWhere(func(*connRecord) bool { return true }, true)
		}
		return ended
	case sel.Source.IsValid():
		src := sel.Source.Unmap()
		ended := Ended{Grants: e.grants.EndWhere(now, func(g GrantInfo) bool { return g.Source == src })}
		if conns != nil {
			from := src.As16()
			ended.Conns, _ = conns.removeWhere(func(r *connRecord) bool { return r.key.src == from }, true)
		}
		return ended
	case sel.Serial != nil:
		ids := e.grants.certs.withSerial(sel.Serial)
		refused := make(map[CertID]error, len(ids))
		for id := range ids {
			refused[id] = nil
		}
		return e.endCerts(refused, now)
	}
	return Ended{}
}

// ForgetConn forgets a connection that ended (conntrack reported it
// destroyed) and reports whether it was recorded.
func (e *Engine) ForgetConn(c Conn) bool {
	t := e.conns.Load()
	return t != nil && t.forget(c)
}

// AttributeConns records each of conns (original-direction tuples, as
// conntrack lists them) that the record does not hold and whose source
// holds a live grant for its protocol and destination port, attributed to
// that grant's live certificates as if the gate had let its first packet
// in at now. It returns how many it recorded, and the connections it
// left: unrecorded, with no live grant (or no room in the record). The
// daemon calls it right after putting back the rules that another tool
// had removed or outranked: a connection opened meanwhile never met the
// gate, and a revocation must still find it. A connection already
// recorded keeps its attribution.
func (e *Engine) AttributeConns(conns []Conn, now time.Time) (recorded int, left []Conn) {
	t := e.conns.Load()
	at := now.UnixNano()
	for _, c := range conns {
		if t == nil { // no grant was ever made: nothing to attribute to
			left = append(left, c)
			continue
		}
		if t.holds(c) {
			continue
		}
		h := c.header()
		if _, ok := e.grants.admit(&h, at, t); ok {
			recorded++
		} else {
			left = append(left, c)
		}
	}
	return recorded, left
}

// PruneConns forgets the recorded connections first accepted before the
// time dumped that live (conntrack's table, dumped at that time) no
// longer holds, for the ended connections whose end went unreported,
// then forgets the certificates nothing refers to any more. It returns
// how many connections it forgot.
func (e *Engine) PruneConns(live map[Conn]struct{}, dumped time.Time) int {
	n := 0
	t := e.conns.Load()
	attributed := map[CertID]bool{}
	if t != nil {
		n = t.prune(live, dumped.UnixNano())
		attributed = t.attributed()
	}
	e.grants.certs.collect(attributed)
	return n
}

// ConnsFull signals that a granted connection was refused because the
// connection record was full: a prune is due. One signal may stand for
// several refusals.
func (e *Engine) ConnsFull() <-chan struct{} {
	e.connsOnce.Do(func() { e.conns.Store(newConnTable(e.cfg.MaxConns)) })
	return e.conns.Load().full
}

// ConnsCapacity returns how many connections the record can hold: at
// least Config.MaxConns, and a little more (room for the hash's spread
// over its shards).
func (e *Engine) ConnsCapacity() int {
	e.connsOnce.Do(func() { e.conns.Store(newConnTable(e.cfg.MaxConns)) })
	return connShards * len(e.conns.Load().shards[0].recs)
}
