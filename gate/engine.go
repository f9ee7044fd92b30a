package gate

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"
)

// Config sets up an Engine. Zero values are noted per field.
type Config struct {
	// Policy is what happens to packets without a grant. Zero is drop.
	Policy Policy
	// OpenDuration is how long a grant lasts; zero means 15 s.
	OpenDuration time.Duration
	// MaxGrants bounds the grant table; zero means DefaultMaxGrants.
	MaxGrants int
	// MaxReplay bounds the replay cache; zero means DefaultReplayEntries.
	MaxReplay int
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// Log receives one line per knock decision and rate-limited gate
	// denials; nil means no logging (nothing is formatted then).
	Log *slog.Logger
	// LogPerSecond bounds denial log lines per second (knock denials not
	// signed by a CA-issued certificate, and gate denials, each
	// separately); zero means 20.
	LogPerSecond int
	// KnockDecided, when set, is called with the source of every knock
	// announced with KnockQueued, once Knock has decided it and its grant,
	// if any, is in place; sknockd releases the gate packets held for it
	// (Hold). It runs on the goroutine that called Knock.
	KnockDecided func(src netip.Addr)
}

// Engine is the running verdict engine: the trust state, the grants and
// the replay cache, with the counters operators read.
type Engine struct {
	cfg    Config // as given; Policy and OpenDuration live in settings
	// settings are what a reload may change while packets flow.
	settings atomic.Pointer[settings]
	clock  func() time.Time
	log    *slog.Logger
	trust  atomic.Pointer[Trust]
	grants *GrantTable
	replay *ReplayCache

	knockLimit  logLimiter // denials of unsigned or unverified knocks
	signedLimit logLimiter // denials of knocks with a valid signature
	gateLimit   logLimiter

	// replayFloor (Unix seconds) is when the replay cache began to cover
	// every acceptable knock: the engine's start, or the last reload that
	// widened the timestamp tolerance (entries made under the narrower one
	// may already be gone). A knock sealed earlier cannot be checked for
	// replay, so it is refused; the client simply knocks again.
	replayFloor atomic.Int64
	pending     pendingKnocks
	stats       Stats
}

// settings are the parts of Config that Reconfigure swaps.
type settings struct {
	policy       Policy
	openDuration time.Duration
}

// Stats are the engine's counters. Read them with Engine.Snapshot.
type Stats struct {
	knocks    [numReasons]atomic.Uint64 // by reason; ReasonNone = granted
	gate      [3]atomic.Uint64          // by Verdict
	gateAudit atomic.Uint64             // accepted only because the policy is none
}

// Snapshot is a copy of the engine's counters at one moment.
type Snapshot struct {
	// Knocks counts knock decisions by reason name ("none" = granted).
	Knocks map[string]uint64
	// Gate counts gate verdicts by name.
	Gate map[string]uint64
	// WouldDeny counts packets the none policy accepted without a grant.
	WouldDeny uint64
	// Grants and Replay are the sizes of the grant table and replay cache.
	Grants, Replay int
}

// NewEngine returns an engine with the given trust state (which may be
// nil until SetTrust; knocks are denied until then).
func NewEngine(cfg Config, trust *Trust) *Engine {
	if cfg.OpenDuration <= 0 {
		cfg.OpenDuration = 15 * time.Second
	}
	if cfg.LogPerSecond <= 0 {
		cfg.LogPerSecond = 20
	}
	e := &Engine{
		cfg:    cfg,
		clock:  cfg.Clock,
		log:    cfg.Log,
		grants: NewGrantTable(cfg.MaxGrants),
		replay: NewReplayCache(cfg.MaxReplay),
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.Reconfigure(cfg.Policy, cfg.OpenDuration)
	e.knockLimit.perSecond = int64(cfg.LogPerSecond)
	e.signedLimit.perSecond = int64(cfg.LogPerSecond)
	e.gateLimit.perSecond = int64(cfg.LogPerSecond)
	e.SetTrust(trust)
	return e
}

// Reconfigure swaps in a new policy and open duration (zero: 15 s) for
// the packets and knocks that follow; live grants keep their expiry.
func (e *Engine) Reconfigure(policy Policy, openDuration time.Duration) {
	if openDuration <= 0 {
		openDuration = 15 * time.Second
	}
	e.settings.Store(&settings{policy: policy, openDuration: openDuration})
}

// Policy returns the policy in force.
func (e *Engine) Policy() Policy { return e.settings.Load().policy }

// OpenDuration returns how long a grant made now lasts.
func (e *Engine) OpenDuration() time.Duration { return e.settings.Load().openDuration }

// SetTrust swaps in a new trust state (after a CRL or CA reload). Live
// grants and the replay cache are kept.
func (e *Engine) SetTrust(t *Trust) {
	if old := e.trust.Swap(t); old == nil || t != nil && t.Tolerance > old.Tolerance {
		e.replayFloor.Store(e.clock().Unix())
	}
}

// Trust returns the current trust state.
func (e *Engine) Trust() *Trust { return e.trust.Load() }

// Grants returns the grant table, for listing and tests.
func (e *Engine) Grants() *GrantTable { return e.grants }

// Verdict answers for one packet to a protected port: accept when src
// holds a live grant for (ipProto, port), otherwise what the policy says.
// ipProto is the IP protocol number (6 TCP, 17 UDP); anything else is
// dropped. It does not allocate.
func (e *Engine) Verdict(src netip.Addr, ipProto uint8, port uint16) Verdict {
	if ipProto != 6 && ipProto != 17 {
		e.stats.gate[Drop].Add(1)
		return Drop
	}
	now := e.clock()
	if e.grants.Allowed(src, ipProto, port, now) {
		e.stats.gate[Accept].Add(1)
		return Accept
	}
	policy := e.Policy()
	v := policy.denyVerdict()
	e.stats.gate[v].Add(1)
	if policy == PolicyNone {
		e.stats.gateAudit.Add(1)
	}
	// Asking the logger first keeps a disabled log off the limiter's
	// atomics too.
	if e.log.Enabled(context.Background(), slog.LevelInfo) {
		if ok, suppressed := e.gateLimit.allow(now); ok {
			e.logGateDenial(src, ipProto, port, v, policy, suppressed)
		}
	}
	return v
}

func (e *Engine) logGateDenial(src netip.Addr, ipProto uint8, port uint16, v Verdict, policy Policy, suppressed uint64) {
	msg := "gate denied"
	if policy == PolicyNone {
		msg = "would deny"
	}
	proto := "udp"
	if ipProto == 6 {
		proto = "tcp"
	}
	e.log.LogAttrs(context.Background(), slog.LevelInfo, msg,
		slog.String("source", src.String()),
		slog.String("proto", proto),
		slog.Uint64("port", uint64(port)),
		slog.String("verdict", v.String()),
		slog.Uint64("suppressed_before", suppressed),
	)
}

// KnockQueued notes that a knock from src waits for Knock: until then,
// Hold says to hold src's packets that have no grant yet, so that a
// connection racing its own knock is not refused a moment before the
// grant. The knock reader calls it for every knock it hands to a worker;
// each call must be followed by Knock or KnockUnhandled for src.
func (e *Engine) KnockQueued(src netip.Addr) { e.pending.add(src) }

// KnockUnhandled undoes KnockQueued for a knock that will not be decided
// (the reader stopped before a worker took it).
func (e *Engine) KnockUnhandled(src netip.Addr) {
	if e.pending.done(src) && e.cfg.KnockDecided != nil {
		e.cfg.KnockDecided(src)
	}
}

// Hold reports whether a packet from src to (ipProto, port) should wait
// for a knock from src that is queued or being decided: there is one, src
// has no live grant for the port, and the policy denies. It costs one
// atomic load while no knock is pending, and does not allocate.
func (e *Engine) Hold(src netip.Addr, ipProto uint8, port uint16) bool {
	if !e.pending.has(src) || e.Policy() == PolicyNone || (ipProto != 6 && ipProto != 17) {
		return false
	}
	return !e.grants.Allowed(src, ipProto, port, e.clock())
}

// Knock decides one knock datagram from src and, when it is granted, opens
// its port for the open duration (extending a live grant). Every decision
// is counted and logged (denials through the log rate limits). Then, if
// src has a knock announced with KnockQueued, Knock takes it as this one
// (callers that announce knocks must announce every knock they pass in)
// and calls Config.KnockDecided.
func (e *Engine) Knock(src netip.Addr, datagram []byte) Decision {
	d := e.knock(src, datagram)
	if e.pending.done(src) && e.cfg.KnockDecided != nil {
		e.cfg.KnockDecided(src)
	}
	return d
}

func (e *Engine) knock(src netip.Addr, datagram []byte) Decision {
	now := e.clock()
	trust := e.trust.Load()
	d := Decide(Input{Datagram: datagram, Source: src, Now: now}, trust, e.replay)
	if d.Granted() && int64(d.Knock.Timestamp) < e.replayFloor.Load() {
		d.Reason, d.Err = ReasonReplay, errBeforeFloor
	}
	if d.Granted() {
		switch e.replay.Add(d.ReplayKey, ReplayExpiry(d.Knock.Time(), now, trust.Tolerance), now) {
		case Present:
			d.Reason, d.Err = ReasonReplay, errReplay
		case Full:
			d.Reason, d.Err = ReasonOverload, errReplayFull
		}
	}
	if d.Granted() && !e.grants.Add(d.Grant, now.Add(e.OpenDuration())) {
		d.Reason, d.Err = ReasonOverload, errGrantsFull
	}
	e.stats.knocks[d.Reason].Add(1)
	e.logKnock(src, &d, now)
	return d
}

// Sweep drops expired grants and returns how many went.
func (e *Engine) Sweep() int { return e.grants.Sweep(e.clock()) }

// Snapshot returns the current counters.
func (e *Engine) Snapshot() Snapshot {
	s := Snapshot{Knocks: map[string]uint64{}, Gate: map[string]uint64{}}
	for r := Reason(0); r < numReasons; r++ {
		if n := e.stats.knocks[r].Load(); n > 0 {
			s.Knocks[r.String()] = n
		}
	}
	for v := Drop; v <= Reject; v++ {
		s.Gate[v.String()] = e.stats.gate[v].Load()
	}
	s.WouldDeny = e.stats.gateAudit.Load()
	s.Grants = e.grants.Len()
	s.Replay = e.replay.Len()
	return s
}
