package main

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

	"sknock/gate"
	"sknock/internal/connwatch"
	"sknock/queue"
	"sknock/rules"
)

// daemon is one running gatekeeper: the engine, its readers (one per gate
// queue, one for knocks), the rule keeper and the state the maintenance
// loop keeps.
type daemon struct {
	cfg    *Config // replaced whole by a reload; read by the loop only
	log    *zap.Logger
	level  zap.AtomicLevel
	engine *gate.Engine
	// decisions logs what engine decides; engine itself does no I/O.
	decisions *decisionLog
	keeper    ruleKeeper
	gateQ     []*queue.GateReader // one per gate queue, all deciding with engine
	knockQ    *queue.KnockReader
	// holdQ receives the packets the gate defers (a SYN racing its own
	// knock) and holder settles them; see gate.Holder.
	holdQ  *queue.HoldReader
	holder *gate.Holder

	crl    *crlState  // the trust state's CRLs, their refresh and health (maintain.go)
	fetch  Fetcher    // gets crl.url
	marker connMarker // ends the connections of revoked grants
	// conns keeps the engine's record of connections current (nil: no
	// conntrack, and the record is never pruned).
	conns *connwatch.Watcher
	hooks hooks // what tests observe; none in production

	// What the operator sees and does (operator.go): counters outside
	// the packet path, control requests for the loop to answer, the
	// service manager's notifier.
	ops      *opsStats
	started  time.Time
	control  chan controlCall
	notifier notifier
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

// ruleKeeper installs the rule set and keeps it in place; *rules.Keeper is
// the real one (over fake tables in tests).
type ruleKeeper interface {
	Apply(rules.Config) error
	Repair() []rules.Finding
}

// osDeps are the daemon's boundaries with the operating system: the
// NFQUEUE sockets, iptables, the network for CRL fetches and the
// single-instance lock. Tests replace them with fakes, and set hooks to
// learn when the daemon has done something instead of watching its log.
type osDeps struct {
	open        queue.Opener
	keeper      func() (ruleKeeper, error)
	removeRules func(rules.Config) error
	fetch       Fetcher
	lock        func() (io.Closer, error)
	// watchEvery is how often the rules are checked; zero means
	// defaultWatchEvery.
	watchEvery time.Duration
	// clock is the engine's clock (grants, replay and hold deadlines);
	// nil means time.Now.
	clock func() time.Time
	// marker marks the connections of grants a revocation ended; nil
	// means none are marked.
	marker connMarker
	// conntrack is the kernel's connection table, against which the
	// engine's record of connections is kept; nil: not kept.
	conntrack connwatch.Conntrack
	// healthEvery is how often the trust state's warnings (no CRL, a
	// stale CRL, certificates near expiry) are logged again while they
	// last; zero means healthEvery.
	healthEvery time.Duration
	// hooks report what the daemon did, for tests; the zero value has
	// none.
	hooks hooks
	// notify sends sd_notify messages; nil sends none.
	notify notifier
	// watchdogEvery returns the service manager's watchdog interval;
	// nil or zero: no watchdog.
	watchdogEvery func() time.Duration
	// kernelStats reads a queue's kernel counters for the watchdog; nil
	// means queue.ReadKernelStats.
	kernelStats func(uint16) (queue.KernelStats, error)
	// listenControl makes the control socket; nil: none.
	listenControl func(path string) (*net.UnixListener, error)
	// peerUID says who called the control socket; nil means the kernel's
	// SO_PEERCRED.
	peerUID func(*net.UnixConn) (uint32, error)
}

// hooks tell a test that the daemon has done something, so that it waits
// on them rather than on the daemon's log or on time. Each is optional:
// nil means none, and production sets none. A hook is called after the
// matching log line, unless a log limiter held it back, was handed to the
// log writer (which writes it asynchronously); it runs on the daemon's
// own goroutines and must return promptly.
type hooks struct {
	// started is called once the daemon serves: its queues are bound, its
	// rules applied and "sknockd started" logged. Tests wait on it before
	// they send packets or signals.
	started func()
	// knockDecided is called with each knock decision, once it is in
	// force (a grant opens the gate) and logged. It runs on a knock
	// worker, so possibly on several at once.
	knockDecided func(src netip.Addr, dec gate.Decision)
	// reloaded is called after each SIGHUP reload attempt: with nil when
	// the configuration was applied, with the reason it was refused
	// otherwise.
	reloaded func(err error)
	// repaired is called after each pass of the rule watcher that found
	// the rules changed, with what it found and whether it restored them
	// (Finding.Err).
	repaired func([]rules.Finding)
	// watchdog is called after each watchdog check: with nil when
	// WATCHDOG=1 went out, with the reason when it was held back.
	watchdog func(error)
	// metricsServing is called with the metrics listener's address once
	// it serves.
	metricsServing func(addr string)
	// crlRefreshed is called after each CRL refresh (fetch and re-read
	// of the CRL files, off the maintenance loop) has been handled by it.
	crlRefreshed func(crlRefresh)
	// healthLogged is called each time the trust state's warnings were
	// logged again (at healthEvery), with them.
	healthLogged func([]healthWarning)
}

// defaultWatchEvery checks the rules often enough to restore them within
// 2 s of a change, with room for a restore that applies two tables (the
// gate in mangle, the rejection in filter) per family on a loaded host.
// On nf_tables hosts a pass that finds nothing changed costs one netlink
// round trip (rules.Keeper.SetGeneration).
const defaultWatchEvery = 500 * time.Millisecond

// realDeps are the kernel's and the network's.
var realDeps = osDeps{
	open:        queue.OpenNFQueue,
	keeper:      func() (ruleKeeper, error) { return rules.SystemKeeper() },
	removeRules: rules.RemoveAll,
	fetch:       httpFetch,
	lock:        lockInstance,
	marker:      conntrackMarker{},
	conntrack:   connwatch.Kernel{},

	notify:        sdNotify,
	watchdogEvery: sdWatchdogEvery,
	kernelStats:   queue.ReadKernelStats,
	listenControl: listenControl,
}

// serve runs the gatekeeper until ctx is done. It returns the exit status.
func serve(ctx context.Context, cfg *Config, hup <-chan os.Signal, stderr io.Writer) int {
	return serveWith(ctx, cfg, hup, stderr, realDeps)
}

// serveWith is serve with the OS boundaries given. The order keeps the
// protected ports closed throughout: the lock first (a second instance
// touches nothing), then trust, then both queues are bound, and only then
// are the rules replaced; on any stop the rules stay.
func serveWith(ctx context.Context, cfg *Config, hup <-chan os.Signal, stderr io.Writer, sys osDeps) int {
	sink := newAsyncWriter(stderr, 4096)
	defer sink.Close()
	level := logLevel(cfg.LogLevel)
	log := newLoggerAt(level, sink)
	defer log.Sync()

	lock, err := sys.lock()
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	defer lock.Close()
	crl := &crlState{done: make(chan crlRefresh, 1)}
	trust, certs, info, warnings, err := loadTrust(ctx, cfg, trustLoad{which: fetchMissing, fetch: sys.fetch, validators: &crl.validators})
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
		return 2
	}
	for _, w := range warnings {
		log.Warn("crl fetch failed", zap.Error(w))
	}
	keeper, err := sys.keeper()
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}

	crl.certs, crl.info = certs, info
	d := &daemon{cfg: cfg, log: log, level: level, keeper: keeper, fetch: sys.fetch, hooks: sys.hooks, marker: sys.marker, crl: crl}
	d.ops, d.started, d.control, d.notifier = newOpsStats(), time.Now(), make(chan controlCall), sys.notify
	d.decisions = newDecisionLog(log, decisionLogPerSecond)
	d.decisions.setProtection(cfg.Rules)
	engineCfg := gate.Config{
		Policy:           cfg.Policy,
		OpenDuration:     cfg.OpenDuration,
		MaxGrants:        cfg.MaxGrants,
		MaxGrantsPerCert: cfg.MaxGrantsPerCert,
		Clock:            sys.clock,
	}
	// The engine remembers through replay, which is opened once the engine
	// can load what it holds, before any knock is read.
	replay := &replayFile{}
	if cfg.ReplayFile != "" {
		engineCfg.Remember = func(e gate.ReplayEntry, cov gate.ReplayCoverage) { replay.remember(e, cov) }
	}
	d.engine = gate.NewEngine(engineCfg, trust)
	if cfg.ReplayFile != "" {
		replay = d.startReplayFile(cfg.ReplayFile)
		defer replay.close()
	} else {
		d.replayMemoryLost("", errors.New("knock.replay_file is empty"))
	}
	if d.holder, err = d.engine.NewHolder(gate.HolderConfig{Settle: d.settleHeld}); err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	d.ops.setWarnings(logTrust(log, "trust loaded", info, d.engine.Now()))
	op, err := d.openOperator(cfg, sys)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	defer op.close()

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	readerDone, stopReaders, err := d.startReaders(runCtx, cancel, sys.open)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	if err := keeper.Apply(cfg.Rules); err != nil {
		stopReaders()
		fmt.Fprintf(stderr, "sknockd: apply rules: %v\n", err)
		return 1
	}
	var watching sync.WaitGroup
	watching.Go(func() { d.watchRules(runCtx, cmp.Or(sys.watchEvery, defaultWatchEvery)) })
	watching.Go(func() { d.holder.Run(runCtx) })
	if sys.conntrack != nil {
		d.conns = newConnWatcher(d, sys.conntrack)
		watching.Go(func() { d.conns.Run(runCtx) })
	}
	if err := d.serveOperator(runCtx, op, sys, &watching); err != nil {
		log.Error("metrics not served", zap.Error(err))
	}
	log.Info("sknockd started",
		zap.String("version", version),
		zap.String("chain", cfg.Rules.Chain),
		zap.Uint16("gate_queue", cfg.Rules.GateQueue),
		zap.Int("gate_queues", len(d.gateQ)),
		zap.Uint16("knock_queue", cfg.Rules.KnockQueue),
		zap.String("protect", protectList(cfg)),
		zap.Stringer("policy", cfg.Policy),
		zap.Duration("open_duration", cfg.OpenDuration),
	)
	// Both queues are bound and the rules in place: only now is sknockd
	// ready for the service manager.
	d.notifyReady("serving; protecting " + protectList(cfg))
	if d.hooks.started != nil {
		d.hooks.started()
	}

	status := d.loop(ctx, hup, readerDone, cmp.Or(sys.healthEvery, healthEvery))
	d.notify("STOPPING=1")
	stopReaders()
	watching.Wait()
	d.logStats()
	// A stop never uncovers the ports: the rules stay, and with no reader
	// the gate queue drops, until the next start binds it again.
	log.Info("sknockd stopped",
		zap.Int("status", status),
		zap.String("rules", "kept"),
		zap.String("note", "protected ports stay closed until sknockd runs again; to uncover them: sknockd --remove-rules --config "+d.cfg.Path),
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
