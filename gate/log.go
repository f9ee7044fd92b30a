package gate

import (
	"crypto/x509"
	"errors"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

var (
	errReplay     = errors.New("datagram seen before")
	errReplayFull = errors.New("replay cache full")
	errGrantsFull = errors.New("grant table full")
	// errBeforeFloor: the replay cache cannot vouch for knocks sealed
	// before it began (start, or a wider tolerance); the client knocks again.
	errBeforeFloor = errors.New("sealed before sknockd's replay memory began (restart or wider tolerance); knock again")
)

// logKnock writes the one line a knock decision gets. Grants are always
// logged: each needs a fresh knock from a certificate holder. Denials go
// through a limiter, because anyone can send them: garbage, and also a
// captured, signed knock replayed after its window (stale) or from another
// address (source mismatch). Denials of signed knocks have a budget of
// their own, so a garbage flood cannot hide them.
func (e *Engine) logKnock(src netip.Addr, d *Decision, now time.Time) {
	var suppressed uint64
	if !d.Granted() {
		limit := &e.knockLimit
		if d.Reason.Authenticated() {
			limit = &e.signedLimit
		}
		var ok bool
		if ok, suppressed = limit.allow(now); !ok {
			return
		}
	}
	fields := make([]zap.Field, 0, 13)
	fields = append(fields,
		zap.String("verdict", d.Verdict()),
		zap.Stringer("source", src),
		// Time from the engine taking the knock to the grant in place
		// (or the denial), crypto included; scripts/bench.sh reads it.
		zap.Int64("decide_us", e.clock().Sub(now).Microseconds()),
	)
	if !d.Granted() {
		fields = append(fields, zap.Stringer("reason", d.Reason))
		if d.Err != nil {
			fields = append(fields, zap.String("detail", d.Err.Error()))
		}
	}
	if k := d.Knock; k != nil {
		fields = append(fields,
			zap.Stringer("proto", k.Proto),
			zap.Uint16("port", k.Port),
			zap.Stringer("client_ip", k.ClientIP),
			zap.Float64("skew_seconds", d.Skew.Seconds()),
		)
	}
	if c := d.Client; c != nil {
		fields = append(fields,
			zap.String("subject", c.Subject),
			zap.String("serial", c.Serial.String()),
		)
	} else if d.Knock != nil {
		// The certificate did not verify (revoked, expired, foreign):
		// still name whose it claims to be. Parsed only for lines the
		// limiter let through.
		if cert, err := x509.ParseCertificate(d.Knock.Certificate); err == nil {
			fields = append(fields,
				zap.String("subject", cert.Subject.String()),
				zap.String("serial", cert.SerialNumber.String()),
			)
		}
	}
	if d.Granted() {
		fields = append(fields, zap.Float64("open_seconds", e.cfg.OpenDuration.Seconds()))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Uint64("suppressed_before", suppressed))
	}
	if d.Granted() {
		e.log.Info("knock", fields...)
	} else {
		e.log.Warn("knock", fields...)
	}
}
