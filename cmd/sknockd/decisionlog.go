package main

import (
	"crypto/x509"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sknock/gate"
	"sknock/packet"
)

// logLimiter lets through at most perSecond log lines each second and
// counts the rest, so a flood cannot fill a disk. It is lock-free: the
// packet path pays two atomic operations, and formats nothing unless the
// limiter said yes.
type logLimiter struct {
	perSecond  int64
	second     atomic.Int64 // the Unix second the count belongs to
	count      atomic.Int64
	suppressed atomic.Uint64 // lines refused since the last report
}

// allow reports whether a line may be written at now, and, when a new
// second starts, how many lines the previous ones suppressed.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed uint64) {
	sec := now.Unix()
	if cur := l.second.Load(); cur != sec && l.second.CompareAndSwap(cur, sec) {
		l.count.Store(0)
		suppressed = l.suppressed.Swap(0)
	}
	if l.count.Add(1) <= l.perSecond {
		return true, suppressed
	}
	l.suppressed.Add(1)
	return false, suppressed
}

// decisionLogPerSecond bounds denial lines per second, for each limiter.
const decisionLogPerSecond = 20

// decisionLog writes the lines of the engine's decisions: one per knock
// (denials rate-limited) and rate-limited gate denials. Grants are always
// logged: each needs a fresh knock from a certificate holder. Denials go
// through a limiter, because anyone can send them: garbage, and also a
// captured, signed knock replayed after its window (stale) or from
// another address (source mismatch). Each kind of denial has a budget of
// its own, so that one kind cannot hide another: a garbage flood cannot
// hide signed denials, and one captured knock replayed again and again
// (replay, stale or future timestamp: anyone holding a capture can send
// those) cannot hide the not_authorized and source_mismatch lines of
// fresh signed knocks.
type decisionLog struct {
	log         *zap.Logger
	knockLimit  logLimiter // denials of unsigned or unverified knocks
	replayLimit logLimiter // replayed datagrams and timestamps outside the window
	signedLimit logLimiter // other denials of knocks with a valid signature
	gateLimit   logLimiter
}

func newDecisionLog(log *zap.Logger, perSecond int64) *decisionLog {
	l := &decisionLog{log: log}
	l.knockLimit.perSecond = perSecond
	l.replayLimit.perSecond = perSecond
	l.signedLimit.perSecond = perSecond
	l.gateLimit.perSecond = perSecond
	return l
}

// denialLimit returns the limiter whose budget a knock denied for r
// spends.
func (l *decisionLog) denialLimit(r gate.Reason) *logLimiter {
	switch {
	case replayable(r):
		return &l.replayLimit
	case r.Authenticated():
		return &l.signedLimit
	}
	return &l.knockLimit
}

// replayable reports whether r is a denial that a copy of one captured
// knock earns every time it is sent: the datagram was seen before, or its
// timestamp is outside the window.
func replayable(r gate.Reason) bool {
	return r == gate.ReasonReplay || r == gate.ReasonStaleTimestamp || r == gate.ReasonFutureTimestamp
}

// knock logs the decision d on a knock from src, which the engine took at
// start and decided by end; open is the open duration of a grant.
func (l *decisionLog) knock(src netip.Addr, d *gate.Decision, start, end time.Time, open time.Duration) {
	level := zapcore.InfoLevel
	if !d.Granted() {
		level = zapcore.WarnLevel
	}
	if !l.log.Core().Enabled(level) {
		return
	}
	var suppressed uint64
	if !d.Granted() {
		var ok bool
		if ok, suppressed = l.denialLimit(d.Reason).allow(start); !ok {
			return
		}
	}
	fields := make([]zap.Field, 0, 13)
	fields = append(fields,
		zap.String("verdict", d.Verdict()),
		zap.String("source", src.String()),
		// Time from the engine taking the knock to the grant in place
		// (or the denial), crypto included; scripts/bench.sh reads it.
		zap.Int64("decide_us", end.Sub(start).Microseconds()),
	)
	if !d.Granted() {
		fields = append(fields, zap.String("reason", d.Reason.String()))
		if d.Err != nil {
			fields = append(fields, zap.String("detail", d.Err.Error()))
		}
	}
	if k := d.Knock; k != nil {
		fields = append(fields,
			zap.String("proto", k.Proto.String()),
			zap.Uint64("port", uint64(k.Port)),
			zap.String("client_ip", k.ClientIP.String()),
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
		fields = append(fields, zap.Float64("open_seconds", open.Seconds()))
	}
	if suppressed > 0 {
		fields = append(fields, zap.Uint64("suppressed_before", suppressed))
	}
	if ce := l.log.Check(level, "knock"); ce != nil {
		ce.Write(fields...)
	}
}

// gateDenied logs, rate-limited, a packet from h.Src to a protected port
// that had no grant and got v under policy; under policy none it was
// accepted and the line says "would deny". Nothing is formatted unless
// the limiter lets the line through.
func (l *decisionLog) gateDenied(h *packet.Header, v packet.Verdict, policy gate.Policy, now time.Time) {
	if !l.log.Core().Enabled(zapcore.InfoLevel) {
		return
	}
	ok, suppressed := l.gateLimit.allow(now)
	if !ok {
		return
	}
	msg := "gate denied"
	if policy == gate.PolicyNone {
		msg = "would deny"
	}
	l.log.Info(msg,
		zap.String("source", h.Src.String()),
		zap.String("proto", h.Proto.String()),
		zap.Uint64("port", uint64(h.DstPort)),
		zap.String("verdict", v.String()),
		zap.Uint64("suppressed_before", suppressed),
	)
}
