package daemon

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"sknock/conns"
	"sknock/gate"
	"sknock/internal/connwatch"
	"sknock/rules"
)

// ConnEnder ends the connections of ended grant shares (package conns);
// the real one talks to the kernel, tests use a fake.
type ConnEnder interface {
	// EndConns ends every tracked connection whose original tuple is one
	// of ended (the connections the gate attributed to the ended
	// certificates), and returns how many it ended.
	EndConns(ended []gate.Conn) (int, error)
}

// systemEnder is the kernel's ConnEnder: socket destroy for local
// connections, conntrack deletion for forwarded ones.
type systemEnder struct{}

// EndConns implements ConnEnder.
func (systemEnder) EndConns(ended []gate.Conn) (int, error) {
	return conns.EndTuples(conns.System{RejectLabel: rules.DefaultRejectLabel}, ended)
}

// endRevoked logs the grant shares a trust change ended and ends the
// connections attributed to them.
func (d *daemon) endRevoked(ended gate.Ended) {
	for _, g := range ended.Grants {
		d.logGrantEnded(g, "revoked")
	}
	if _, err := d.endConns(ended.Conns, "connections of revoked grants ended"); err != nil {
		d.log.Error("could not end every connection of the revoked grants; those go on until they close", zap.Error(err))
	}
}

// logGrantEnded logs one ended grant share; extra fields (the operator's
// selection) follow the reason.
func (d *daemon) logGrantEnded(g gate.EndedGrant, reason string, extra ...zap.Field) {
	fields := append([]zap.Field{
		zap.String("source", g.Source.String()),
		zap.String("proto", g.Proto.String()),
		zap.Uint64("port", uint64(g.Port)),
		zap.Stringer("serial", g.Serial),
		zap.String("reason", reason),
	}, extra...)
	d.log.Warn("grant ended", append(fields,
		zap.String("subject", g.Subject),
		zap.Bool("address_still_open", g.StillOpen),
		zap.Time("would_expire", g.Expiry),
		zap.Error(g.Why),
	)...)
}

// endConns ends the connections a revocation or an operator ended (those
// the gate attributed to the ended certificates, by exact tuple), and
// logs how many with msg.
func (d *daemon) endConns(ended []gate.Conn, msg string) (int, error) {
	if d.conns != nil {
		d.conns.PruneSoon() // a revocation is also when the record is pruned
	}
	if len(ended) == 0 || d.marker == nil {
		return 0, nil
	}
	n, err := d.marker.EndConns(ended)
	if err != nil {
		return n, err
	}
	d.log.Warn(msg, zap.Int("connections", n), zap.Int("recorded", len(ended)))
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
