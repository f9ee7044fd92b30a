package main

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ti-mo/conntrack"
	"go.uber.org/zap"

	"sknock/gate"
	"sknock/internal/connwatch"
)

// connMarker sets a connection mark on tracked connections, so that the
// rule set's revoke rules end them; the real one talks to conntrack over
// netlink (github.com/ti-mo/conntrack), tests use a fake.
type connMarker interface {
	// MarkFlows ORs mark into the mark of every tracked connection whose
	// original tuple is one of conns, and returns how many it marked.
	MarkFlows(conns []gate.Conn, mark uint32) (int, error)
}

// conntrackMarker is the kernel's connMarker.
type conntrackMarker struct{}

// MarkFlows implements connMarker. Marking rather than deleting is what
// makes the end stick: a deleted entry is re-created by the connection's
// next packet (nf_conntrack_tcp_loose), a marked one keeps its mark.
func (conntrackMarker) MarkFlows(conns []gate.Conn, mark uint32) (int, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack dump: %w", err)
	}
	ended := make(map[gate.Conn]struct{}, len(conns))
	for _, c := range conns {
		ended[c] = struct{}{}
	}
	marked := 0
	var errs []error
	for _, f := range flows {
		if _, ok := ended[connwatch.ConnOf(f)]; !ok || f.Mark&mark == mark {
			continue
		}
		upd := conntrack.Flow{TupleOrig: f.TupleOrig, TupleReply: f.TupleReply, Zone: f.Zone, Mark: f.Mark | mark}
		if err := c.Update(upd); err != nil {
			errs = append(errs, fmt.Errorf("conntrack update %s: %w", f.TupleOrig, err))
			continue
		}
		marked++
	}
	return marked, errors.Join(errs...)
}

// endRevoked logs the grant shares a trust change ended and ends the
// connections attributed to them.
func (d *daemon) endRevoked(ended gate.Ended) {
	for _, g := range ended.Grants {
		d.log.Warn("grant ended",
			zap.String("source", g.Source.String()),
			zap.String("proto", g.Proto.String()),
			zap.Uint64("port", uint64(g.Port)),
			zap.Stringer("serial", g.Serial),
			zap.String("reason", "revoked"),
			zap.String("subject", g.Subject),
			zap.Bool("address_still_open", g.StillOpen),
			zap.Time("would_expire", g.Expiry),
			zap.Error(g.Why),
		)
	}
	if _, err := d.endConns(ended.Conns, "connections of revoked grants ended"); err != nil {
		d.log.Error("could not end every connection of the revoked grants; those go on until they close", zap.Error(err))
	}
}

// endConns ends the connections a revocation or an operator ended (those
// the gate attributed to the ended certificates, by exact tuple), when a
// revoke mark is configured, and logs how many with msg.
func (d *daemon) endConns(conns []gate.Conn, msg string) (int, error) {
	if d.conns != nil {
		d.conns.PruneSoon() // a revocation is also when the record is pruned
	}
	mark := d.cfg.Rules.RevokeMark
	if len(conns) == 0 || mark == 0 || d.marker == nil {
		return 0, nil
	}
	n, err := d.marker.MarkFlows(conns, mark)
	if err != nil {
		return n, err
	}
	d.log.Warn(msg, zap.Int("connections", n), zap.Int("recorded", len(conns)))
	return n, nil
}

// newConnWatcher returns the watcher that keeps d's record of connections
// current, logging its failures at most every ten minutes.
func newConnWatcher(d *daemon, ct connwatch.Conntrack) *connwatch.Watcher {
	w := connwatch.New(ct, d.engine)
	var mu sync.Mutex
	var last time.Time
	w.Failed = func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); last.IsZero() || now.Sub(last) >= 10*time.Minute {
			last = now
			d.log.Warn("the record of connections may keep ended ones (revocation still ends only recorded ones)", zap.Error(err))
		}
	}
	return w
}
