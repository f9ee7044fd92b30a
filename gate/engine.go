package gate

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"sknock/knock"
	"sknock/packet"
)

// Config sets up an Engine. Zero values are noted per field.
type Config struct {
	// Policy is what happens to packets without a grant. Zero is drop.
	Policy Policy
	// OpenDuration is how long a grant lasts; zero means 15 s.
	OpenDuration time.Duration
	// MaxGrants bounds the grant table; zero means DefaultMaxGrants.
	MaxGrants int
	// MaxGrantsPerCert bounds the grants one certificate may hold, so that
	// an insider knocking from many addresses cannot fill the table; zero
	// means no bound.
	MaxGrantsPerCert int
	// MaxReplay bounds the replay cache; zero means DefaultReplayEntries.
	MaxReplay int
	// MaxConns bounds the connections recorded for revocation; zero means
	// DefaultMaxConns. Beyond it a new connection is refused as if it had
	// no grant (fail closed) until ended connections are forgotten
	// (ForgetConn, PruneConns).
	MaxConns int
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// Remember, when set, is given the replay entry of every knock about
	// to be granted, before the grant takes effect, and of every signed
	// knock refused as a source mismatch, with the coverage the
	// engine's replay memory has then (ReplayCoverage), so that the
	// daemon can keep the memory across restarts (see LoadReplay). It runs
	// on the goroutine that called Knock, so it must be quick; it cannot
	// refuse the grant (the engine's own cache protects it for the life of
	// the process). Nil: nothing outside the engine remembers.
	Remember func(ReplayEntry, ReplayCoverage)
	// Protects reports whether the host protects proto/port: a v2 knock
	// is granted the requests it protects (a grant for another port
	// would open nothing). Nil: every port counts as protected.
	Protects func(proto packet.Proto, port uint16) bool
	// Protocols are the wire versions knocks may use (knock.protocols);
	// a knock of another version is refused with ReasonProtocolRefused
	// before anything costlier. Empty: 1 and 2.
	Protocols []int
}

// Engine is the running verdict engine: the trust state, the grants and
// the replay cache, the knocks being decided, with the counters operators
// read. It returns decisions and counts; it does no I/O (the daemon logs
// what it returns).
type Engine struct {
	cfg   Config // as given; Policy and OpenDuration live in settings
	clock func() time.Time
	// settings are what a reload may change while packets flow.
	settings atomic.Pointer[settings]
	// protocols is the protocolSet of accepted wire versions.
	protocols atomic.Uint32
	trust     atomic.Pointer[Trust]
	grants    *GrantTable
	// conns records the connections the grants let in, made at the first
	// grant (nil until then: an engine that never grants costs nothing).
	conns     atomic.Pointer[connTable]
	connsOnce sync.Once
	// saveMu serialises WriteSavedConns, which reuses saveScratch (one
	// shard's records at a time).
	saveMu      sync.Mutex
	saveScratch []connRecord
	replay      *ReplayCache
	// outcomes spares copies of a datagram the costly checks (see
	// outcomeCache).
	outcomes *outcomeCache
	// secrets spares datagrams reusing an ephemeral key the ECDH.
	secrets *sharedSecrets
	// recent are the sources of recent grants (RecentlyGranted).
	recent *recentGrantees

	// replayFloor (Unix seconds) is when the replay cache began to cover
	// every acceptable knock: the engine's start, or the last reload that
	// widened the timestamp tolerance (entries made under the narrower one
	// may already be gone). A knock sealed earlier cannot be checked for
	// replay, so it is refused; the client simply knocks again.
	replayFloor atomic.Int64
	// started is when the engine was made (NoReplayMemory).
	started time.Time
	// minTolerance (nanoseconds) is the narrowest timestamp tolerance any
	// trust state had since the engine began: the tolerance its replay
	// entries were made under is at least this (ReplayCoverage).
	minTolerance atomic.Int64
	pending      pendingKnocks
	// decided tells the Holder that a pending knock was decided, so that
	// it settles the packets it holds; one signal stands for any number
	// (capacity 1). Nil without a Holder: then nothing is ever deferred.
	decided chan struct{}
	// deferPerSource and deferTotal bound the packets deferred and not yet
	// settled (the Holder's MaxHeldPerSource and MaxHeld).
	deferPerSource, deferTotal int32
	stats                      Stats
}

// settings are the parts of Config that Reconfigure swaps.
type settings struct {
	policy       Policy
	openDuration time.Duration
}

// protocolSet is the set of wire versions accepted, by bit.
type protocolSet uint8

// protocolsOf returns the set of versions, 1 and 2 when empty.
func protocolsOf(versions []int) protocolSet {
	if len(versions) == 0 {
		return 1<<1 | 1<<2
	}
	var set protocolSet
	for _, v := range versions {
		if v > 0 && v < 8 {
			set |= 1 << v
		}
	}
	return set
}

// SetProtocols sets the wire versions knocks may use from now on (empty:
// 1 and 2), as Config.Protocols does at the start; a reload calls it.
func (e *Engine) SetProtocols(versions []int) { e.protocols.Store(uint32(protocolsOf(versions))) }

// Accepts reports whether knocks of wire version v are accepted; v 0 (no
// version sknock knows) always is, to be refused as malformed.
func (e *Engine) Accepts(v int) bool {
	return v == 0 || v < 8 && protocolSet(e.protocols.Load())&(1<<v) != 0
}

// Stats are the engine's counters.
type Stats struct {
	knocks    [numReasons]atomic.Uint64 // by reason; ReasonNone = granted
	gate      [3]atomic.Uint64          // by final verdict: drop, accept, reject
	gateAudit atomic.Uint64             // accepted only because the policy is none
	connsFull atomic.Uint64             // granted, but refused: the connection table was full
	deferred  atomic.Uint64             // sent to the Holder
	holds     holdStats
}

// Snapshot is a copy of the engine's counters at one moment.
type Snapshot struct {
	// Knocks counts knock decisions by reason name ("granted" for grants).
	Knocks map[string]uint64
	// Gate counts the gate's final verdicts by name (a deferred packet
	// counts once its Holder settles it).
	Gate map[string]uint64
	// WouldDeny counts packets the none policy accepted without a grant.
	WouldDeny uint64
	// Deferred counts packets sent to the Holder; HoldTimeouts those it
	// settled because their knock took too long; HoldOverflows packets
	// that raced a knock but were decided at once because the source's
	// share of the Holder, or the Holder, was full.
	Deferred, HoldTimeouts, HoldOverflows uint64
	// Grants and Replay are the sizes of the grant table and replay cache.
	Grants, Replay int
	// OutcomeHits counts knocks whose costly checks (decryption,
	// certificate, signature) were spared because the same datagram was
	// seen before; Outcomes is the outcome cache's size.
	OutcomeHits uint64
	Outcomes    int
	// SecretHits counts ECDHs spared because a datagram's ephemeral key
	// was seen before.
	SecretHits uint64
	// Conns is the number of connections recorded for revocation;
	// ConnsFull counts granted packets refused because that record was
	// full.
	Conns     int
	ConnsFull uint64
}

// errProtocolRefused are the errors of ReasonProtocolRefused by version
// (made once: a flood of refused datagrams allocates nothing).
var errProtocolRefused = [3]error{
	nil,
	errors.New("knock v1 refused by this host's knock.protocols"),
	errors.New("knock v2 refused by this host's knock.protocols"),
}

var (
	errReplay     = errors.New("datagram seen before")
	errReplayFull = errors.New("replay cache full")
	// errRevokedMeanwhile: a reload revoked the certificate while its knock
	// was being decided; the grant it made is ended.
	errRevokedMeanwhile = errors.New("certificate refused by a reload while the knock was decided")
	// ErrReplayNarrower and ErrReplayFull are why LoadReplay kept the
	// replay floor at the engine's start.
	ErrReplayNarrower = errors.New("the replay memory was made under a narrower timestamp tolerance")
	ErrReplayFull     = errors.New("the replay memory does not fit the replay cache")
	// errBeforeFloor: the replay cache cannot vouch for knocks sealed
	// before it began (start, or a wider tolerance); the client knocks again.
	errBeforeFloor = errors.New("sealed before sknockd's replay memory began (restart or wider tolerance); knock again")
)

// NewEngine returns an engine with the given trust state (which may be
// nil until SetTrust; knocks are denied until then).
func NewEngine(cfg Config, trust *Trust) *Engine {
	e := &Engine{
		cfg:    cfg,
		clock:  cfg.Clock,
		grants: NewGrantTable(cfg.MaxGrants),
		replay: NewReplayCache(cfg.MaxReplay),
		// The outcome cache's bound is fixed (DefaultOutcomeEntries).
		outcomes: newOutcomeCache(0),
		secrets:  newSharedSecrets(0),
		recent:   newRecentGrantees(),
	}
	if e.clock == nil {
		e.clock = time.Now
	}
	e.started = e.clock()
	e.grants.SetCertShare(cfg.MaxGrantsPerCert)
	e.SetProtocols(cfg.Protocols)
	e.Reconfigure(cfg.Policy, cfg.OpenDuration)
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
// grants and the replay cache are kept, except that every certificate
// behind a grant share or a recorded connection is verified again under
// the new state: the shares and connections of those that no longer
// verify (revoked, issuing CA revoked or removed, expired) end at once
// and are returned, for the caller to log and to end.
func (e *Engine) SetTrust(t *Trust) Ended {
	old := e.trust.Swap(t)
	// Outcomes made under the old state never serve the new one; dropping
	// them frees the old state.
	e.outcomes.reset()
	if old == nil || t != nil && t.Tolerance > old.Tolerance {
		e.replayFloor.Store(e.clock().Unix())
	}
	if old != nil && t != nil && t.Tolerance > old.Tolerance {
		e.replay.Extend(t.Tolerance - old.Tolerance)
	}
	if t == nil {
		return Ended{}
	}
	for tol := int64(t.Tolerance); ; {
		cur := e.minTolerance.Load()
		if cur != 0 && cur <= tol || e.minTolerance.CompareAndSwap(cur, tol) {
			break
		}
	}
	return e.rejudge(t)
}

// ReplayCoverage returns what the engine's replay memory vouches for: the
// knocks sealed at or after its replay floor, remembered under at least
// the narrowest tolerance it has had.
func (e *Engine) ReplayCoverage() ReplayCoverage {
	return ReplayCoverage{
		Since:     time.Unix(e.replayFloor.Load(), 0),
		Tolerance: time.Duration(e.minTolerance.Load()),
	}
}

// LoadReplay adds the replay entries a previous engine remembered (see
// Config.Remember) that are still within their window, and lowers the
// replay floor to cov.Since, so that a knock granted before a restart is
// refused after it while knocks sealed just before the restart are still
// granted. It is meant for the start, before the first knock, with a
// trust state set. The floor stays at the engine's start, and the error
// says why, when cov was made under a narrower tolerance than the one in
// force (ErrReplayNarrower: its entries may have expired too soon) or
// when the entries do not all fit the cache (ErrReplayFull); the entries
// that fit are loaded either way. It returns how many were added.
func (e *Engine) LoadReplay(cov ReplayCoverage, entries []ReplayEntry) (int, error) {
	added, fits := e.replay.load(entries, e.clock())
	trust := e.trust.Load()
	switch {
	case !fits:
		return added, ErrReplayFull
	case trust == nil || cov.Tolerance < trust.Tolerance:
		return added, ErrReplayNarrower
	}
	if since := cov.Since.Unix(); since < e.replayFloor.Load() {
		e.replayFloor.Store(since)
	}
	return added, nil
}

// NoReplayMemory tells the engine that the replay memory of the run
// before it is lost: it was not kept (no replay file, or one that cannot
// be written), cannot be read, or does not vouch for the tolerance in
// force. A knock granted before the start may be stamped up to the
// tolerance ahead of the clock, so the replay floor is raised to the
// start plus the tolerance (and a second, for whole-second timestamps):
// no knock sealed before the start can be granted after it. The cost:
// until that floor, every knock is refused as sealed too early, and its
// client knocks again. It returns the floor. Call it at the start,
// before the first knock.
func (e *Engine) NoReplayMemory() time.Time {
	tol := time.Duration(0)
	if t := e.trust.Load(); t != nil {
		tol = t.Tolerance
	}
	// A knock granted before the start is stamped at most start+tol,
	// rounded down to whole seconds: the floor is the next second.
	floor := e.started.Unix() + int64((tol+time.Second-1)/time.Second) + 1
	if floor > e.replayFloor.Load() {
		e.replayFloor.Store(floor)
	}
	return time.Unix(e.replayFloor.Load(), 0)
}

// Trust returns the current trust state.
func (e *Engine) Trust() *Trust { return e.trust.Load() }

// Grants returns the grant table, for listing and tests.
func (e *Engine) Grants() *GrantTable { return e.grants }

// Now returns the engine's clock reading.
func (e *Engine) Now() time.Time { return e.clock() }

// Verdict answers for one packet to a protected port, whose decoded
// header is h, at now: Accept when its source holds a live grant for the
// protocol and destination port; Defer when it has none but a knock from
// that source is being decided and the Holder has room for it (4 packets
// a source, 64 in all, unless configured otherwise; never under policy
// none); otherwise what the policy says. granted reports a live grant, so
// that the caller can log the rest as denials (under policy none, as
// "would deny"). Anything but TCP and UDP is dropped, and so is anything
// from an IPv6 source that stands for an IPv4 address (v4-mapped or
// v4-compatible), under every policy: it would otherwise ride the grant
// of the IPv4 address it spells. It counts every answer and does not
// allocate.
func (e *Engine) Verdict(h *packet.Header, now time.Time) (v packet.Verdict, granted bool) {
	v, granted = e.verdict(h, now)
	if v != packet.Accept && e.decided != nil && gateable(h) {
		switch ok, full := e.pending.tryDefer(h.Src, e.deferPerSource, e.deferTotal); {
		case ok:
			e.stats.deferred.Add(1)
			return packet.Defer, false
		case full:
			e.stats.holds.overflows.Add(1)
		}
	}
	e.count(v, granted)
	return v, granted
}

// gateable reports whether a packet can be gated at all: TCP or UDP, from
// a source that is not an IPv4 address in IPv6 form. The rest is dropped
// and never deferred.
func gateable(h *packet.Header) bool {
	return h.Proto.Valid() && !ipv4InIPv6(h.Src)
}

// verdict is Verdict without deferring or counting.
func (e *Engine) verdict(h *packet.Header, now time.Time) (packet.Verdict, bool) {
	if !gateable(h) {
		return packet.Drop, false
	}
	switch granted, recorded := e.grants.admit(h, now.UnixNano(), e.conns.Load()); {
	case recorded:
		return packet.Accept, true
	case granted:
		e.stats.connsFull.Add(1)
	}
	return e.Policy().denyVerdict(), false
}

// count counts a final gate verdict.
func (e *Engine) count(v packet.Verdict, granted bool) {
	e.stats.gate[v].Add(1)
	if v == packet.Accept && !granted {
		e.stats.gateAudit.Add(1)
	}
}

// KnockQueued notes that a knock from src waits for Knock: until then,
// Verdict defers src's packets that have no grant yet, so that a
// connection racing its own knock is not refused a moment before the
// grant. The knock reader calls it for every knock it hands to a worker;
// each call must be followed by Knock or KnockUnhandled for src.
func (e *Engine) KnockQueued(src netip.Addr) { e.pending.add(src) }

// KnockUnhandled undoes KnockQueued for a knock that will not be decided
// (the reader stopped before a worker took it).
func (e *Engine) KnockUnhandled(src netip.Addr) {
	if e.pending.done(src) {
		e.announce()
	}
}

// announce tells the Holder that a pending knock was decided. A full
// channel means a signal is already waiting, which covers this one too.
func (e *Engine) announce() {
	if e.decided == nil {
		return
	}
	select {
	case e.decided <- struct{}{}:
	default:
	}
}

// Knock decides one knock datagram from src and, when it is granted, opens
// its port for the open duration (extending a live grant). Every decision
// is counted; the caller logs it. Then, if src has a knock announced with
// KnockQueued, Knock takes it as this one (callers that announce knocks
// must announce every knock they pass in) and tells the Holder.
func (e *Engine) Knock(src netip.Addr, datagram []byte) Decision {
	d := e.knock(src, datagram)
	if e.pending.done(src) {
		e.announce()
	}
	return d
}

func (e *Engine) knock(src netip.Addr, datagram []byte) Decision {
	now := e.clock()
	trust := e.trust.Load()
	var d Decision
	if v := knock.Version(datagram); !e.Accepts(v) {
		d.Version = v
		d = deny(d, ReasonProtocolRefused, errProtocolRefused[min(v, 2)])
	} else {
		d = decide(Input{Datagram: datagram, Source: src, Now: now}, trust, e.replay, e.outcomes, e.secrets)
	}
	sealed, _ := d.SealedAt()
	if d.Granted() && sealed.Unix() < e.replayFloor.Load() {
		d.Reason, d.Err = ReasonReplay, errBeforeFloor
	}
	// A signed knock refused because it came from another address than
	// the one it names is remembered like a granted one: whoever resends
	// it, from the address it names (a forged address discovery put it
	// there) or from anywhere, gets a replay, never a grant.
	if d.Granted() || d.Remember || (d.Reason == ReasonSourceMismatch && !sealed.IsZero()) {
		e.remember(&d, sealed, now, trust.Tolerance)
	}
	if d.Granted() {
		e.connsOnce.Do(func() { e.conns.Store(newConnTable(e.cfg.MaxConns)) })
		id := CertIDOf(d.Client.Cert.Raw)
		// Known before the share exists, so that a trust change meanwhile
		// verifies it again.
		n := noted{client: d.Client}
		if d.KnockV2 != nil {
			n.chain = d.KnockV2.Chain
		}
		e.grants.certs.note(id, n.client, n.chain)
		if err := e.grant(&d, id, now); err != nil {
			d.Reason, d.Err = ReasonOverload, err
		}
		// A reload that refused this certificate while the knock was
		// being decided under the old trust state ends the share it just
		// made.
		if cur := e.trust.Load(); d.Granted() && cur != trust && cur != nil && cur.Verifier != nil {
			if err := n.verify(cur.Verifier, now); err != nil {
				e.grants.End(map[CertID]error{id: err}, now)
				d.Reason, d.Err = certReason(err), fmt.Errorf("%w: %w", errRevokedMeanwhile, err)
			}
		}
	}
	if d.Granted() {
		e.recent.add(src, now)
	}
	e.stats.knocks[d.Reason].Add(1)
	return d
}

// remember records d's replay key (a granted knock, or a v2 knock whose
// signature verified, whatever its verdict) until the timestamp leaves
// the window. A copy seen meanwhile is a replay; a full memory refuses a
// grant rather than make it unprotected.
func (e *Engine) remember(d *Decision, sealed, now time.Time, tolerance time.Duration) {
	expiry := ReplayExpiry(sealed, now, tolerance)
	switch e.replay.Add(d.ReplayKey, expiry, now) {
	case Added:
		if e.cfg.Remember != nil {
			e.cfg.Remember(ReplayEntry{Key: d.ReplayKey, Expiry: expiry}, e.ReplayCoverage())
		}
	case Present:
		d.Reason, d.Err = ReasonReplay, errReplay
	case Full:
		if d.Granted() {
			d.Reason, d.Err = ReasonOverload, errReplayFull
		}
	}
}

// grant adds the grants of the granted decision d: v1's one, or every
// request of a v2 knock that the host protects (Config.Protects), all or
// none; d.Grants is left holding those.
func (e *Engine) grant(d *Decision, cert CertID, now time.Time) error {
	until := now.Add(e.OpenDuration())
	if d.KnockV2 == nil {
		return e.grants.Add(d.Grant, cert, until)
	}
	protected := d.Grants[:0:0]
	for _, g := range d.Grants {
		if e.cfg.Protects == nil || e.cfg.Protects(g.Proto, g.Port) {
			protected = append(protected, g)
		}
	}
	// What the knock was granted, for the caller: none when the host
	// protects none of its requests.
	d.Grants = protected
	return e.grants.AddAll(protected, cert, until)
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
	for _, v := range []packet.Verdict{packet.Drop, packet.Accept, packet.Reject} {
		s.Gate[v.String()] = e.stats.gate[v].Load()
	}
	s.WouldDeny = e.stats.gateAudit.Load()
	s.Deferred = e.stats.deferred.Load()
	s.HoldTimeouts = e.stats.holds.timeouts.Load()
	s.HoldOverflows = e.stats.holds.overflows.Load()
	s.Grants = e.grants.Len()
	s.Replay = e.replay.Len()
	s.OutcomeHits = e.outcomes.hits.Load()
	s.Outcomes = e.outcomes.len()
	s.SecretHits = e.secrets.hits.Load()
	if c := e.conns.Load(); c != nil {
		s.Conns = c.len()
	}
	s.ConnsFull = e.stats.connsFull.Load()
	return s
}
