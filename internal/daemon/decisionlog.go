package daemon

import (
	"crypto/x509"
	"fmt"
	"hash/maphash"
	"net/netip"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sknock/gate"
	"sknock/packet"
	"sknock/rules"
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
// those) cannot hide the not_authorized lines of fresh signed knocks, nor
// can a captured knock sent from other addresses (source_mismatch, which
// anyone holding a fresh capture can earn) hide them either.
type decisionLog struct {
	log         *zap.Logger
	knockLimit  logLimiter // denials of unsigned or unverified knocks
	replayLimit logLimiter // replayed datagrams and timestamps outside the window
	signedLimit logLimiter // other denials of knocks with a valid signature
	// mismatchLimit: signed knocks from an address other than the one
	// they name (a capture resent from elsewhere, or a wrong address)
	mismatchLimit logLimiter
	gateLimit     logLimiter
	// gateSources folds a source's gate denials into one line per
	// gateSourceWindow (see gateDenied).
	gateSources sourceLimiter
	// protection is what gate.protect and gate.always_allow cover: a
	// granted knock for another port is logged as not_protected.
	protection atomic.Pointer[protection]
}

func newDecisionLog(log *zap.Logger, perSecond int64) *decisionLog {
	l := &decisionLog{log: log, gateSources: sourceLimiter{seed: maphash.MakeSeed()}}
	l.knockLimit.perSecond = perSecond
	l.replayLimit.perSecond = perSecond
	l.signedLimit.perSecond = perSecond
	l.mismatchLimit.perSecond = perSecond
	l.gateLimit.perSecond = perSecond
	return l
}

// denialLimit returns the limiter whose budget a knock denied for r
// spends.
func (l *decisionLog) denialLimit(r gate.Reason) *logLimiter {
	switch {
	case replayable(r):
		return &l.replayLimit
	case r == gate.ReasonSourceMismatch:
		return &l.mismatchLimit
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
	fields := make([]zap.Field, 0, 18)
	verdict := d.Verdict()
	unprotected := d.Granted() && (d.Knock != nil && !l.protection.Load().protects(d.Knock.Proto, d.Knock.Port) ||
		d.KnockV2 != nil && len(d.Grants) == 0) // the engine granted a v2 knock only its protected requests
	if unprotected {
		verdict = "not_protected" // granted, but the port is not gated: the knock opened nothing
	}
	fields = append(fields,
		zap.String("verdict", verdict),
		zap.String("source", src.String()),
		// Time from the engine taking the knock to the grant in place
		// (or the denial), crypto included; scripts/bench.sh reads it.
		zap.Int64("decide_us", end.Sub(start).Microseconds()),
	)
	if unprotected && d.Knock != nil {
		fields = append(fields, zap.String("detail", fmt.Sprintf("%s/%d is not in gate.protect (or is always allowed): the knock changes nothing for it", d.Knock.Proto, d.Knock.Port)))
	}
	if unprotected && d.KnockV2 != nil {
		fields = append(fields, zap.String("detail", fmt.Sprintf("none of %s is in gate.protect (or each is always allowed): the knock changes nothing for them", gate.RequestsString(d.KnockV2.Requests))))
	}
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
	if d.Version == 2 {
		fields = append(fields, zap.Int("protocol", 2))
	}
	if k := d.KnockV2; k != nil {
		if len(k.Requests) == 1 { // the fields of a v1 knock, for readers of the log
			fields = append(fields, zap.String("proto", k.Requests[0].Proto.String()), zap.Uint64("port", uint64(k.Requests[0].Port)))
		}
		fields = append(fields,
			zap.String("requests", gate.RequestsString(k.Requests)),
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
// accepted and the line says "would deny". One source gets at most one
// line per gateSourceWindow (a client's own retries and probes around a
// failed knock are many packets); the line says how many of its packets
// the window before folded ("source_folded"). Nothing is formatted
// unless both limiters let the line through.
func (l *decisionLog) gateDenied(h *packet.Header, v packet.Verdict, policy gate.Policy, now time.Time) {
	if !l.log.Core().Enabled(zapcore.InfoLevel) {
		return
	}
	fresh, folded := l.gateSources.allow(h.Src, now)
	if !fresh {
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
		zap.Uint64("source_folded", folded),
	)
}

// protection is the part of the rule set that says which ports a grant
// opens: protected and not always allowed.
type protection struct {
	protect, allow []rules.PortSpec
}

// setProtection takes gate.protect and gate.always_allow from c, at the
// start and on each reload.
func (l *decisionLog) setProtection(c rules.Config) {
	l.protection.Store(&protection{protect: c.Protect, allow: c.AlwaysAllow})
}

// protects reports whether a grant for proto/port opens anything under
// the rule set in force (the engine grants a v2 knock those requests).
func (l *decisionLog) protects(proto packet.Proto, port uint16) bool {
	return l.protection.Load().protects(proto, port)
}

// protects reports whether a grant for proto/port opens anything; true
// when nothing was set (tests that build a decisionLog by hand).
func (p *protection) protects(proto packet.Proto, port uint16) bool {
	if p == nil {
		return true
	}
	for _, a := range p.allow {
		if a.Contains(proto, port) {
			return false
		}
	}
	for _, s := range p.protect {
		if s.Contains(proto, port) {
			return true
		}
	}
	return false
}

// gateSourceWindow is how often one source gets a gate denial line.
const gateSourceWindow = 10 * time.Second

// gateSourceSlots bounds the sources sourceLimiter tells apart: a fixed
// table, no allocation per packet. Sources that hash to one slot share
// its window; at worst a line is folded into another source's count.
const gateSourceSlots = 4096

// sourceLimiter lets one line per source through each gateSourceWindow
// and counts the rest. Lock-free; counts may be off by a packet under
// races, never the bound.
type sourceLimiter struct {
	seed  maphash.Seed
	slots [gateSourceSlots]sourceSlot
}

type sourceSlot struct {
	key    atomic.Uint64 // the source's hash; 0: free
	until  atomic.Int64  // Unix nanoseconds until which its lines are folded
	folded atomic.Uint64 // lines folded since its last line
}

// allow reports whether src may have a line at now and, if so, how many
// of its lines were folded since its last one.
func (s *sourceLimiter) allow(src netip.Addr, now time.Time) (ok bool, folded uint64) {
	a := src.As16()
	key := maphash.Bytes(s.seed, a[:]) | 1
	slot := &s.slots[key%gateSourceSlots]
	t := now.UnixNano()
	if slot.key.Load() == key && t < slot.until.Load() {
		slot.folded.Add(1)
		return false, 0
	}
	if slot.key.Swap(key) == key {
		folded = slot.folded.Swap(0)
	} else {
		slot.folded.Store(0)
	}
	slot.until.Store(t + int64(gateSourceWindow))
	return true, folded
}
