package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sknock/gate"
	"sknock/packet"
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

	crlStamp fileStamp // the CRL file the trust state was built from
	fetch    Fetcher   // gets crl.url
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
// single-instance lock. Tests replace them with fakes.
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
}

// defaultWatchEvery checks the rules often enough to restore them within
// 2 s of a change.
const defaultWatchEvery = time.Second

// realDeps are the kernel's and the network's.
var realDeps = osDeps{
	open:        queue.OpenNFQueue,
	keeper:      func() (ruleKeeper, error) { return rules.SystemKeeper() },
	removeRules: rules.RemoveAll,
	fetch:       httpFetch,
	lock:        lockInstance,
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
	trust, info, warnings, err := loadTrust(ctx, cfg, sys.fetch)
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

	d := &daemon{cfg: cfg, log: log, level: level, keeper: keeper, fetch: sys.fetch}
	d.crlStamp = stampOf(cfg.CRLFile)
	d.decisions = newDecisionLog(log, decisionLogPerSecond)
	d.engine = gate.NewEngine(gate.Config{
		Policy:       cfg.Policy,
		OpenDuration: cfg.OpenDuration,
		MaxGrants:    cfg.MaxGrants,
		Clock:        sys.clock,
	}, trust)
	if d.holder, err = d.engine.NewHolder(gate.HolderConfig{Settle: d.settleHeld}); err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	logTrust(log, "trust loaded", info)

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

	status := d.loop(ctx, hup, readerDone)
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

// startReaders binds every queue and starts its reader on ctx. It returns
// once all are bound (or one failed, when all are stopped again), with the
// channel a reader's failure arrives on and the function that stops them
// all.
func (d *daemon) startReaders(ctx context.Context, cancel context.CancelFunc, openSocket queue.Opener) (<-chan error, func(), error) {
	gateQueues := d.cfg.Rules.GateQueueNumbers()
	readers := len(gateQueues) + 2 // and the knock and hold queues
	bound := make(chan error, readers)
	open := func(sc queue.SocketConfig) (queue.Socket, error) {
		s, err := openSocket(sc)
		bound <- err
		return s, err
	}
	for _, q := range gateQueues {
		g, err := queue.NewGate(queue.GateConfig{
			Queue:      q,
			Decide:     d.decideGate,
			HoldQueue:  d.cfg.HoldQueue,
			Holding:    true,
			RejectMark: d.cfg.Rules.Mark,
			Open:       open,
		})
		if err != nil {
			return nil, nil, err
		}
		d.gateQ = append(d.gateQ, g)
	}
	var err error
	if d.knockQ, err = queue.NewKnock(queue.KnockConfig{
		Queue:     d.cfg.Rules.KnockQueue,
		Handle:    d.handleKnock,
		Queued:    d.engine.KnockQueued,
		Unhandled: d.engine.KnockUnhandled,
		Workers:   d.cfg.KnockWorkers,
		Depth:     d.cfg.KnockBacklog,
		Open:      open,
	}); err != nil {
		return nil, nil, err
	}
	if d.holdQ, err = queue.NewHold(queue.HoldConfig{
		Queue:       d.cfg.HoldQueue,
		Deliver:     d.deliverHeld,
		RejectMark:  d.cfg.Rules.Mark,
		MaxQueueLen: gate.DefaultMaxHeld,
		Open:        open,
	}); err != nil {
		return nil, nil, err
	}

	// readerDone has room for every reader, so none blocks on it; the
	// wait group, not the channel, tells when all have returned.
	readerDone := make(chan error, readers)
	var running sync.WaitGroup
	runReader := func(run func(context.Context) error) {
		running.Go(func() { readerDone <- run(ctx) })
	}
	for _, g := range d.gateQ {
		runReader(g.Run)
	}
	runReader(d.knockQ.Run)
	runReader(d.holdQ.Run)
	stop := func() {
		cancel()
		stopped := make(chan struct{})
		go func() { running.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			d.log.Warn("queue reader slow to stop")
		}
	}
	for range readers {
		if err := <-bound; err != nil {
			stop()
			return nil, nil, err
		}
	}
	return readerDone, stop, nil
}

// loop is the maintenance loop: signals, grant sweeps, CRL refresh and
// periodic counters. It returns the exit status.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal, readerDone <-chan error) int {
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	crl := time.NewTicker(d.cfg.CRLRefresh)
	defer crl.Stop()
	stats := time.NewTicker(time.Minute)
	defer stats.Stop()
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping", zap.String("signal", "SIGTERM/SIGINT"))
			return 0
		case err := <-readerDone:
			d.log.Error("queue reader failed; exiting with the rules left in place (protected ports stay closed)", zap.Error(err))
			return 1
		case sig := <-hup:
			if sig == syscall.SIGUSR1 {
				d.logStats()
				continue
			}
			if d.reloadConfig(ctx) {
				crl.Reset(d.cfg.CRLRefresh)
			}
		case <-crl.C:
			d.refreshCRL(ctx)
		case <-sweep.C:
			d.engine.Sweep()
		case <-stats.C:
			d.logStats()
		}
	}
}

// watchRules checks the rules every interval until ctx is done, restoring
// them where another tool changed them, and logs what it found. A repair
// that keeps failing is logged at most every loudEvery.
func (d *daemon) watchRules(ctx context.Context, interval time.Duration) {
	const loudEvery = 5 * time.Second
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var lastLoud time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, f := range d.keeper.Repair() {
			if f.Err == nil {
				d.log.Error("rules restored", zap.String("family", f.Family), zap.String("problem", f.Problem))
				continue
			}
			if now := time.Now(); now.Sub(lastLoud) >= loudEvery {
				lastLoud = now
				d.log.Error("rules damaged and NOT restored: protected ports may be reachable without a grant; retrying every second",
					zap.String("family", f.Family), zap.String("problem", f.Problem), zap.Error(f.Err))
			}
		}
	}
}

// refreshCRL rebuilds the trust state on the refresh tick when the CRL
// (fetched or on disk) changed. A failure keeps the current trust state.
func (d *daemon) refreshCRL(ctx context.Context) {
	var fetch Fetcher
	if d.cfg.CRLURL != "" {
		fetch = d.fetch
	}
	if fetch == nil && stampOf(d.cfg.CRLFile) == d.crlStamp {
		return
	}
	trust, info, warnings, err := loadTrust(ctx, d.cfg, fetch)
	for _, w := range warnings {
		d.log.Warn("crl fetch failed, keeping the last good CRL", zap.Error(w))
	}
	if err != nil {
		d.log.Error("CRL refresh failed, keeping the current trust state", zap.Error(err))
		return
	}
	newStamp := stampOf(d.cfg.CRLFile)
	if newStamp == d.crlStamp {
		return
	}
	d.crlStamp = newStamp
	d.engine.SetTrust(trust)
	logTrust(d.log, "trust reloaded (CRL refresh)", info)
}

func logTrust(log *zap.Logger, msg string, info TrustInfo) {
	fields := []zap.Field{
		zap.String("server", info.Server),
		zap.Strings("cas", info.CAs),
		zap.Int("crl_revoked", info.CRLSerials),
	}
	if !info.CRLNext.IsZero() {
		fields = append(fields, zap.Time("crl_next_update", info.CRLNext))
	}
	log.Info(msg, fields...)
	if info.CRLStale {
		log.Warn("CRL is past its next update; its revocations still apply, publish a new one", zap.Time("crl_next_update", info.CRLNext))
	}
}

// decideGate is the gate queue's verdict function: the engine decides,
// and a denial is logged (rate-limited). It does not allocate unless a
// line is written.
func (d *daemon) decideGate(h *packet.Header) packet.Verdict {
	now := d.engine.Now()
	v, granted := d.engine.Verdict(h, now)
	if !granted && v != packet.Defer {
		d.decisions.gateDenied(h, v, d.engine.Policy(), now)
	}
	return v
}

// deliverHeld runs on the hold queue's receive goroutine: it hands a
// deferred packet to the holder.
func (d *daemon) deliverHeld(ctx context.Context, p *queue.Packet, h *packet.Header) {
	d.holder.Hold(ctx, gate.HeldPacket{ID: p.ID, Mark: p.Mark, Header: *h})
}

// settleHeld runs on the holder's goroutine, the only one that answers
// the hold queue.
func (d *daemon) settleHeld(p *gate.HeldPacket, v packet.Verdict) {
	if v != packet.Accept {
		d.decisions.gateDenied(&p.Header, v, d.engine.Policy(), d.engine.Now())
	}
	if err := d.holdQ.Settle(p.ID, p.Mark, v); err != nil && !errors.Is(err, queue.ErrNotRunning) {
		d.log.Warn("hold queue verdict refused; the kernel drops the packet", zap.Error(err))
	}
}

// handleKnock runs on a knock worker: the engine decides, the daemon logs.
func (d *daemon) handleKnock(src netip.Addr, payload []byte) {
	start := d.engine.Now()
	dec := d.engine.Knock(src, payload)
	d.decisions.knock(src, &dec, start, d.engine.Now(), d.engine.OpenDuration())
}

func (d *daemon) logStats() {
	s := d.engine.Snapshot()
	g, k := d.gateTotals(), d.knockQ.Stats()
	d.log.Info("counters",
		zap.Any("knocks", s.Knocks),
		zap.Any("gate", s.Gate),
		zap.Uint64("would_deny", s.WouldDeny),
		zap.Int("grants", s.Grants),
		zap.Int("replay_cache", s.Replay),
		zap.Uint64("gate_packets", g.Packets),
		zap.Uint64("gate_unknown", g.Unknown),
		zap.Uint64("gate_receive_errors", g.ReceiveErrors),
		zap.Uint64("gate_verdict_messages", g.VerdictMessages),
		zap.Uint64("gate_verdict_errors", g.VerdictErrors),
		zap.Uint64("gate_held", s.Deferred),
		zap.Uint64("gate_hold_timeouts", s.HoldTimeouts),
		zap.Uint64("gate_hold_overflows", s.HoldOverflows),
		zap.Uint64("knock_packets", k.Received.Load()),
		zap.Uint64("knock_shed", k.Shed.Load()),
		zap.Uint64("knock_truncated", k.Truncated.Load()),
		zap.Uint64("knock_receive_errors", k.ReceiveErrors.Load()),
		zap.Uint64("knock_verdict_errors", k.VerdictErrors.Load()),
	)
}

// gateTotals are the counters of every gate reader, summed.
type gateTotals struct {
	Packets, Accepted, Dropped, Rejected, Unknown, ReceiveErrors uint64
	VerdictMessages, VerdictErrors                               uint64
}

// gateTotals sums the counters of the gate readers, which each count their
// own queue (no shared cache line between them on the packet path).
func (d *daemon) gateTotals() gateTotals {
	var t gateTotals
	for _, g := range d.gateQ {
		s := g.Stats()
		t.Packets += s.Packets.Load()
		t.Accepted += s.Accepted.Load()
		t.Dropped += s.Dropped.Load()
		t.Rejected += s.Rejected.Load()
		t.Unknown += s.Unknown.Load()
		t.ReceiveErrors += s.ReceiveErrors.Load()
		t.VerdictMessages += s.VerdictMessages.Load()
		t.VerdictErrors += s.VerdictErrors.Load()
	}
	return t
}

// fileStamp identifies a version of a file cheaply.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}
