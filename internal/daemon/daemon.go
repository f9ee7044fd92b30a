package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sknock/conns"
	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/connwatch"
	"sknock/internal/control"
	"sknock/queue"
	"sknock/rules"
)

// daemon is one running gatekeeper: the engine, its readers (one per gate
// queue, one for knocks), the rule keeper and the state the maintenance
// loop keeps.
type daemon struct {
	// run is the state in force, gen counts the states applied (0
	// before the start's); apply alone replaces them, on the loop.
	run    state
	gen    uint64
	log    *zap.Logger
	level  zap.AtomicLevel
	engine *gate.Engine
	// decisions logs what engine decides; engine itself does no I/O.
	decisions *decisionLog
	keeper    RuleKeeper
	gateQ     []*queue.GateReader // one per gate queue, all deciding with engine
	knockQ    *queue.KnockReader
	// holdQ receives the packets the gate defers (a SYN racing its own
	// knock) and holder settles them; see gate.Holder.
	holdQ  *queue.HoldReader
	holder *gate.Holder

	crl    *crlState // the trust state's CRLs, their refresh and health (maintain.go)
	fetch  Fetcher   // gets crl.url
	marker ConnEnder // ends the connections of revoked grants
	// conns keeps the engine's record of connections current (nil: no
	// conntrack, and the record is never pruned).
	conns *connwatch.Watcher
	// flows lists conntrack's connections after a restore of the rules
	// (window.go); nil: not looked for.
	flows FlowLister
	// generations opens a reader of the nf_tables generation for each
	// gate reader (grantInPlace); nil: grants always repeat.
	generations func() (GenerationSource, error)
	hooks       Hooks // what tests observe; none in production

	// What the operator sees and does (operator.go): counters outside
	// the packet path, control requests for the loop to answer, the
	// service manager's notifier.
	ops      *opsStats
	version  string
	started  time.Time
	control  chan controlCall
	notifier Notifier
	// lastReload is the last reload's outcome (nil before one); the
	// maintenance loop alone reads and writes it.
	lastReload *control.Reload
}

// newLoggerAt returns the daemon's JSON logger at a level a reload can
// change.
func newLoggerAt(level zap.AtomicLevel, w io.Writer) *zap.Logger {
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core)
}

// logLevel parses a checked log.level.
func logLevel(name string) zap.AtomicLevel {
	var lvl zapcore.Level
	_ = lvl.UnmarshalText([]byte(name))
	return zap.NewAtomicLevelAt(lvl)
}

// RuleKeeper installs the rule set and keeps it in place; *rules.Keeper is
// the real one (over fake tables in tests).
type RuleKeeper interface {
	Apply(rules.Config) error
	Repair() []rules.Finding
	Refit() (changed, labels bool, err error)
}

// OSDeps are the daemon's boundaries with the operating system: the
// NFQUEUE sockets, iptables, the network for CRL fetches and the
// single-instance lock. Tests replace them with fakes, and set Hooks to
// learn when the daemon has done something instead of watching its log.
type OSDeps struct {
	// Version is the build's version, for the start line, the metrics
	// and status; main sets it from its build flags.
	Version string
	// Open binds an NFQUEUE.
	Open queue.Opener
	// Keeper returns the rule keeper (iptables and ip6tables).
	Keeper func() (RuleKeeper, error)
	// RemoveRules removes the rule set (--remove-rules).
	RemoveRules func(rules.Config) error
	// Fetch gets a CRL URL.
	Fetch Fetcher
	// Lock takes the single-instance lock of the network namespace.
	Lock func() (io.Closer, error)
	// WatchEvery is how often the rules are checked; zero means
	// defaultWatchEvery.
	WatchEvery time.Duration
	// Clock is the engine's clock (grants, replay and hold deadlines);
	// nil means time.Now.
	Clock func() time.Time
	// Marker ends the connections of grant shares a revocation ended;
	// nil means none are ended.
	Marker ConnEnder
	// Conntrack is the kernel's connection table, against which the
	// engine's record of connections is kept; nil: not kept.
	Conntrack connwatch.Conntrack
	// Flows lists conntrack's connections, for those opened while
	// another tool had the rules away (window.go); nil: not looked for.
	Flows FlowLister
	// Generations opens a reader of the nf_tables ruleset generation, one
	// per gate reader, so that grants are accepted in place while nothing
	// follows the gate's jump (readers.go, grantInPlace); nil: grants
	// always repeat.
	Generations func() (GenerationSource, error)
	// HealthEvery is how often the trust state's warnings (no CRL, a
	// stale CRL, certificates near expiry) are logged again while they
	// last; zero means healthEvery.
	HealthEvery time.Duration
	// Hooks report what the daemon did, for tests; the zero value has
	// none.
	Hooks Hooks
	// Notify sends sd_notify messages; nil sends none.
	Notify Notifier
	// WatchdogEvery returns the service manager's watchdog interval;
	// nil or zero: no watchdog.
	WatchdogEvery func() time.Duration
	// KernelStats reads a queue's kernel counters for the watchdog; nil
	// means queue.ReadKernelStats.
	KernelStats func(uint16) (queue.KernelStats, error)
	// ListenControl makes the control socket; nil: none.
	ListenControl func(path string) (*net.UnixListener, error)
	// PeerUID says who called the control socket; nil means the kernel's
	// SO_PEERCRED.
	PeerUID func(*net.UnixConn) (uint32, error)
}

// Hooks tell a test that the daemon has done something, so that it waits
// on them rather than on the daemon's log or on time. Each is optional:
// nil means none, and production sets none. A hook is called after the
// matching log line, unless a log limiter held it back, was handed to the
// log writer (which writes it asynchronously); it runs on the daemon's
// own goroutines and must return promptly.
type Hooks struct {
	// Started is called once the daemon serves: its queues are bound, its
	// rules applied and "sknockd started" logged. Tests wait on it before
	// they send packets or signals.
	Started func()
	// KnockDecided is called with each knock decision, once it is in
	// force (a grant opens the gate) and logged. It runs on a knock
	// worker, so possibly on several at once.
	KnockDecided func(src netip.Addr, dec gate.Decision)
	// Reloaded is called after each SIGHUP reload attempt: with nil when
	// the configuration was applied, with the reason it was refused
	// otherwise.
	Reloaded func(err error)
	// Repaired is called after each pass of the rule watcher that found
	// the rules changed, with what it found and whether it restored them
	// (Finding.Err).
	Repaired func([]rules.Finding)
	// Watchdog is called after each watchdog check: with nil when
	// WATCHDOG=1 went out, with the reason when it was held back.
	Watchdog func(error)
	// MetricsServing is called with the metrics listener's address once
	// it serves.
	MetricsServing func(addr string)
	// CRLRefreshed is called after each CRL refresh (fetch and re-read
	// of the CRL files, off the maintenance loop) has been handled by it.
	CRLRefreshed func(crlRefresh)
	// HealthLogged is called each time the trust state's warnings were
	// logged again (at healthEvery), with them.
	HealthLogged func([]healthWarning)
}

// defaultWatchEvery checks the rules often enough to restore them within
// 2 s of a change, with room for a restore that applies two tables (the
// gate in mangle, the rejection in filter) per family on a loaded host.
// On nf_tables hosts a pass that finds nothing changed costs one netlink
// round trip (rules.Keeper.SetGeneration).
const defaultWatchEvery = 500 * time.Millisecond

// System is the kernel's and the network's boundaries.
var System = OSDeps{
	Open:        queue.OpenNFQueue,
	Keeper:      func() (RuleKeeper, error) { return rules.SystemKeeper() },
	RemoveRules: rules.RemoveAll,
	Fetch:       httpFetch,
	Lock:        lockInstance,
	Marker:      systemEnder{},
	Conntrack:   connwatch.Kernel{},
	Flows:       conns.System{},
	Generations: func() (GenerationSource, error) { return rules.OpenGenerationReader() },

	Notify:        sdNotify,
	WatchdogEvery: sdWatchdogEvery,
	KernelStats:   queue.ReadKernelStats,
	ListenControl: control.Listen,
}

// Serve runs the gatekeeper until ctx is done, over the OS boundaries
// sys (System, but for tests): it reloads on SIGHUP and logs the counters
// on SIGUSR1 arriving on hup. It returns the exit status. The order
// keeps the protected ports closed throughout: the lock first (a second
// instance touches nothing), then trust, then both queues are bound, and
// only then are the rules replaced; on any stop the rules stay.
func Serve(ctx context.Context, cfg *config.Config, hup <-chan os.Signal, stderr io.Writer, sys OSDeps) int {
	sink := newAsyncWriter(stderr, 4096)
	defer sink.Close()
	level := logLevel(cfg.LogLevel)
	log := newLoggerAt(level, sink)
	defer log.Sync()

	lock, err := sys.Lock()
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	defer lock.Close()
	crl := &crlState{done: make(chan crlRefresh, 1)}
	first, warnings, err := loadState(ctx, cfg, trustLoad{which: fetchMissing, fetch: sys.Fetch, validators: &crl.validators})
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
		return 2
	}
	keeper, err := sys.Keeper()
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}

	// The readers are sized by first's restart-only keys; apply puts the
	// rest of it in force once they are bound.
	d := &daemon{run: state{cfg: cfg}, log: log, level: level, keeper: keeper, fetch: sys.Fetch, hooks: sys.Hooks, marker: sys.Marker, flows: sys.Flows, generations: sys.Generations, crl: crl}
	d.ops, d.version, d.started, d.control, d.notifier = newOpsStats(), sys.Version, time.Now(), make(chan controlCall), sys.Notify
	d.logWarnings("crl fetch failed", warnings)
	d.decisions = newDecisionLog(log, decisionLogPerSecond)
	d.decisions.setProtection(cfg.Rules) // for knocks read before apply
	engineCfg := gate.Config{
		Policy:           cfg.Policy,
		OpenDuration:     cfg.OpenDuration,
		MaxGrants:        cfg.MaxGrants,
		MaxGrantsPerCert: cfg.MaxGrantsPerCert,
		Clock:            sys.Clock,
		Protocols:        cfg.KnockProtocols,
		Protects:         d.decisions.protects,
	}
	// The engine remembers through replay, which is opened once the engine
	// can load what it holds, before any knock is read.
	replay := &replayFile{}
	if cfg.ReplayFile != "" {
		engineCfg.Remember = func(e gate.ReplayEntry, cov gate.ReplayCoverage) { replay.remember(e, cov) }
	}
	// The engine decides with first's trust from its first packet: rules
	// of the boot step (--apply-rules) may queue knocks before apply.
	d.engine = gate.NewEngine(engineCfg, first.trust)
	if cfg.ReplayFile != "" {
		replay = d.startReplayFile(cfg.ReplayFile)
		defer replay.close()
	} else {
		d.replayMemoryLost("", errors.New("knock.replay_file is empty"))
	}
	// The previous run's connection record, restored before the first
	// packet, so that a revocation still ends what it let in.
	var saved *connsFile
	if path := connsFileOf(cfg.ReplayFile); path != "" {
		saved = d.restoreConns(path)
	}
	if d.holder, err = d.engine.NewHolder(gate.HolderConfig{Settle: d.settleHeld}); err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	op, err := d.openOperator(cfg, sys)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	defer op.close()

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readerDone, stopReaders, err := d.startReaders(runCtx, cancel, sys.Open)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	if err := d.apply(first, "trust loaded"); err != nil {
		stopReaders()
		fmt.Fprintf(stderr, "sknockd: apply rules: %v\n", err)
		return 1
	}
	var watching sync.WaitGroup
	watching.Go(func() { d.watchRules(runCtx, cmp.Or(sys.WatchEvery, defaultWatchEvery)) })
	watching.Go(func() { d.holder.Run(runCtx) })
	if sys.Conntrack != nil {
		d.conns = newConnWatcher(d, sys.Conntrack)
		watching.Go(func() { d.conns.Run(runCtx) })
	}
	if saved != nil {
		watching.Go(func() { saved.run(runCtx) })
	}
	if err := d.serveOperator(runCtx, op, sys, &watching); err != nil {
		log.Error("metrics not served", zap.Error(err))
	}
	log.Info("sknockd started",
		zap.String("version", d.version),
		zap.String("chain", cfg.Rules.Chain),
		zap.Uint16("gate_queue", cfg.Rules.GateQueue),
		zap.Int("gate_queues", len(d.gateQ)),
		zap.Uint16("knock_queue", cfg.Rules.KnockQueue),
		zap.String("protect", cfg.ProtectList()),
		zap.Stringer("policy", cfg.Policy),
		zap.Duration("open_duration", cfg.OpenDuration),
	)
	if cfg.Rules.RevokeMark != 0 {
		log.Warn("gate.revoke_mark is deprecated and ignored: revocation ends connections by socket destroy and conntrack deletion")
	}
	// Both queues are bound and the rules in place: only now is sknockd
	// ready for the service manager.
	d.notifyReady("serving; protecting " + cfg.ProtectList())
	if d.hooks.Started != nil {
		d.hooks.Started()
	}

	status := d.loop(ctx, hup, readerDone, cmp.Or(sys.HealthEvery, healthEvery))
	d.notify("STOPPING=1")
	stopReaders()
	watching.Wait()
	if saved != nil {
		saved.save() // what the readers let in last
	}
	d.logStats()
	// A stop never uncovers the ports: the rules stay, and with no reader
	// the gate queue drops, until the next start binds it again.
	log.Info("sknockd stopped",
		zap.Int("status", status),
		zap.String("rules", "kept"),
		zap.String("note", "protected ports stay closed until sknockd runs again; to uncover them: sknockd --remove-rules --config "+d.run.cfg.Path),
	)
	return status
}

// startReplayFile loads the replay memory kept in path into the engine
// and returns the file, open for the engine's Remember; it creates the
// file's directory (0700) when missing. Whatever fails is logged and
// sknockd runs on without the memory (replayMemoryLost). A file that
// cannot be kept at all gives a closed replayFile, whose remember does
// nothing.
func (d *daemon) startReplayFile(path string) *replayFile {
	rf, mem, err := openReplayFile(path, d.engine.Now, d.log)
	if rf == nil {
		d.replayMemoryLost(path, err)
		return &replayFile{}
	}
	if err != nil {
		d.replayMemoryLost(path, fmt.Errorf("unreadable: %w", err))
	}
	if mem.cov.Tolerance > 0 { // a memory was read
		loaded, err := d.engine.LoadReplay(mem.cov, mem.entries)
		fields := []zap.Field{zap.String("file", path), zap.Int("entries", loaded)}
		if err != nil {
			d.replayMemoryLost(path, fmt.Errorf("loaded %d entries, but: %w", loaded, err))
		} else {
			d.log.Info("replay memory loaded", append(fields, zap.Time("since", mem.cov.Since))...)
		}
	}
	if err := rf.start(d.engine.ReplayCoverage(), mem); err != nil {
		d.log.Warn("replay memory not kept across restarts: the next start will not find it (a knock granted now and stamped ahead could be granted again after a restart)", zap.String("file", path), zap.Error(err))
	}
	return rf
}

// RulesOnly applies (the boot step) or removes the rule set without
// serving, holding the single-instance lock meanwhile: while a sknockd
// runs, it owns the rules, and both are refused.
func RulesOnly(cfg *config.Config, remove bool, stdout, stderr io.Writer, sys OSDeps) int {
	flag := "--apply-rules"
	if remove {
		flag = "--remove-rules"
	}
	lock, err := sys.Lock()
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s refused: %v\n", flag, err)
		return 1
	}
	defer lock.Close()
	if remove {
		if err := sys.RemoveRules(cfg.Rules); err != nil {
			fmt.Fprintf(stderr, "sknockd: remove rules: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "sknockd: removed chain %s (mangle and filter) and its jumps (IPv4 and IPv6): %s now reachable WITHOUT a grant\n", cfg.Rules.Chain, cfg.ProtectList())
		return 0
	}
	keeper, err := sys.Keeper()
	if err == nil {
		err = keeper.Apply(cfg.Rules)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: apply rules: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "sknockd: applied chain %s: %s closed, knocks unanswered, until sknockd serves queues %d and %d\n",
		cfg.Rules.Chain, cfg.ProtectList(), cfg.Rules.GateQueue, cfg.Rules.KnockQueue)
	return 0
}

// replayMemoryLost raises the engine's replay floor to its start plus the
// tolerance, because the previous run's replay memory is lost (why), and
// logs the floor and its cost.
func (d *daemon) replayMemoryLost(path string, why error) {
	floor := d.engine.NoReplayMemory()
	d.log.Warn("replay memory of the previous run lost: knocks sealed before the floor are refused, so none granted before the start is granted again",
		zap.String("file", path),
		zap.Time("floor", floor),
		zap.String("cost", fmt.Sprintf("every knock is refused for %s after the start (clients knock again)", floor.Sub(d.engine.Now()).Round(time.Second))),
		zap.Error(why))
}
