package gate

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net/netip"
	"time"
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
	level := slog.LevelInfo
	if !d.Granted() {
		level = slog.LevelWarn
	}
	ctx := context.Background()
	if !e.log.Enabled(ctx, level) {
		return
	}
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
	// The longest line (a denial of an opened knock) has 12 attributes;
	// the array stays on the stack.
	var buf [13]slog.Attr
	attrs := append(buf[:0],
		slog.String("verdict", d.Verdict()),
		slog.String("source", src.String()),
		// Time from the engine taking the knock to the grant in place
		// (or the denial), crypto included; scripts/bench.sh reads it.
		slog.Int64("decide_us", e.clock().Sub(now).Microseconds()),
	)
	if !d.Granted() {
		attrs = append(attrs, slog.String("reason", d.Reason.String()))
		if d.Err != nil {
			attrs = append(attrs, slog.String("detail", d.Err.Error()))
		}
	}
	if k := d.Knock; k != nil {
		attrs = append(attrs,
			slog.String("proto", k.Proto.String()),
			slog.Uint64("port", uint64(k.Port)),
			slog.String("client_ip", k.ClientIP.String()),
			slog.Float64("skew_seconds", d.Skew.Seconds()),
		)
	}
	if c := d.Client; c != nil {
		attrs = append(attrs,
			slog.String("subject", c.Subject),
			slog.String("serial", c.Serial.String()),
		)
	} else if d.Knock != nil {
		// The certificate did not verify (revoked, expired, foreign):
		// still name whose it claims to be. Parsed only for lines the
		// limiter let through.
		if cert, err := x509.ParseCertificate(d.Knock.Certificate); err == nil {
			attrs = append(attrs,
				slog.String("subject", cert.Subject.String()),
				slog.String("serial", cert.SerialNumber.String()),
			)
		}
	}
	if d.Granted() {
		attrs = append(attrs, slog.Float64("open_seconds", e.OpenDuration().Seconds()))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Uint64("suppressed_before", suppressed))
	}
	e.log.LogAttrs(ctx, level, "knock", attrs...)
}
