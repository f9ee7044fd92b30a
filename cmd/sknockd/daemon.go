package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"sknock/gate"
	"sknock/queue"
	"sknock/rules"
)

// daemon is one running gatekeeper: the engine, its readers (one per gate
// queue, one for knocks) and the state the maintenance loop keeps.
type daemon struct {
	cfg    *Config
	log    *zap.Logger
	engine *gate.Engine
	gateQ  []*queue.GateReader // one per gate queue, all deciding with engine
	knockQ *queue.KnockReader

	crlStamp fileStamp // the CRL file the trust state was built from
	fetch    Fetcher   // gets crl.url
}

func newLogger(level string, w io.Writer) *zap.Logger {
	var lvl zapcore.Level
	_ = lvl.UnmarshalText([]byte(level))
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core)
}

// osDeps are the daemon's boundaries with the operating system: the
// NFQUEUE sockets, iptables, the network for CRL fetches and the
// single-instance lock. Tests replace them with fakes.
type osDeps struct {
	open        queue.Opener
	applyRules  func(rules.Config) error
	removeRules func(rules.Config) error
	fetch       Fetcher
	lock        func(queues []uint16) (io.Closer, error)
}

// realDeps are the kernel's and the network's.
var realDeps = osDeps{
	open:        queue.OpenNFQueue,
	applyRules:  rules.ApplyAll,
	removeRules: rules.RemoveAll,
	fetch:       httpFetch,
	lock:        lockQueues,
}

// serve runs the gatekeeper until ctx is done. It returns the exit status.
func serve(ctx context.Context, cfg *Config, hup <-chan os.Signal, stderr io.Writer) int {
	return serveWith(ctx, cfg, hup, stderr, realDeps)
}

// serveWith is serve with the OS boundaries given.
func serveWith(ctx context.Context, cfg *Config, hup <-chan os.Signal, stderr io.Writer, sys osDeps) int {
	sink := newAsyncWriter(stderr, 4096)
	defer sink.Close()
	log := newLogger(cfg.LogLevel, sink)
	defer log.Sync()

	trust, info, warnings, err := loadTrust(ctx, cfg, sys.fetch)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
		return 2
	}
	for _, w := range warnings {
		log.Warn("crl fetch failed", zap.Error(w))
	}
	gateQueues := cfg.Rules.GateQueueNumbers()
	readers := len(gateQueues) + 1
	lock, err := sys.lock(append(slices.Clip(gateQueues), cfg.Rules.KnockQueue))
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}
	defer lock.Close()

	d := &daemon{cfg: cfg, log: log, fetch: sys.fetch}
	d.crlStamp = stampOf(cfg.CRLFile)
	d.engine = gate.NewEngine(gate.Config{
		Policy:       cfg.Policy,
		OpenDuration: cfg.OpenDuration,
		MaxGrants:    cfg.MaxGrants,
		Log:          slog.New(newZapHandler(log.Core())),
		KnockDecided: d.releaseHeld,
	}, trust)
	logTrust(log, "trust loaded", info)

	bound := make(chan error, readers)
	open := func(sc queue.SocketConfig) (queue.Socket, error) {
		s, err := sys.open(sc)
		bound <- err
		return s, err
	}
	for _, q := range gateQueues {
		g, err := queue.NewGate(queue.GateConfig{
			Queue:      q,
			Decide:     d.decideGate,
			Hold:       d.holdGate,
			RejectMark: cfg.Rules.Mark,
			Open:       open,
		})
		if err != nil {
			fmt.Fprintf(stderr, "sknockd: %v\n", err)
			return 1
		}
		d.gateQ = append(d.gateQ, g)
	}
	if d.knockQ, err = queue.NewKnock(queue.KnockConfig{
		Queue:     cfg.Rules.KnockQueue,
		Handle:    d.handleKnock,
		Queued:    d.engine.KnockQueued,
		Unhandled: d.engine.KnockUnhandled,
		Workers:   cfg.KnockWorkers,
		Depth:     cfg.KnockBacklog,
		Open:      open,
	}); err != nil {
		fmt.Fprintf(stderr, "sknockd: %v\n", err)
		return 1
	}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// readerDone has room for every reader, so none blocks on it; the
	// wait group, not the channel, tells when all have returned.
	readerDone := make(chan error, readers)
	var running sync.WaitGroup
	runReader := func(run func(context.Context) error) {
		running.Go(func() { readerDone <- run(runCtx) })
	}
	for _, g := range d.gateQ {
		runReader(g.Run)
	}
	runReader(d.knockQ.Run)
	stopReaders := func() {
		cancel()
		stopped := make(chan struct{})
		go func() { running.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			log.Warn("queue reader slow to stop")
		}
	}
	for range readers {
		if err := <-bound; err != nil {
			stopReaders()
			fmt.Fprintf(stderr, "sknockd: %v\n", err)
			return 1
		}
	}

	if err := sys.applyRules(cfg.Rules); err != nil {
		stopReaders()
		fmt.Fprintf(stderr, "sknockd: apply rules: %v\n", err)
		return 1
	}
	log.Info("sknockd started",
		zap.String("version", version),
		zap.String("chain", cfg.Rules.Chain),
		zap.Uint16("gate_queue", cfg.Rules.GateQueue),
		zap.Int("gate_queues", len(gateQueues)),
		zap.Uint16("knock_queue", cfg.Rules.KnockQueue),
		zap.String("protect", protectList(cfg)),
		zap.Stringer("policy", cfg.Policy),
		zap.Duration("open_duration", cfg.OpenDuration),
	)

	status := d.loop(ctx, hup, readerDone)
	if status == 0 {
		// A clean stop removes everything; a broken reader leaves the
		// rules in place, so protected ports stay closed (fail closed).
		if err := sys.removeRules(cfg.Rules); err != nil {
			log.Error("remove rules", zap.Error(err))
			status = 1
		}
	}
	stopReaders()
	d.logStats()
	log.Info("sknockd stopped", zap.Int("status", status))
	return status
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
			d.reload(ctx, true)
		case <-crl.C:
			d.reload(ctx, false)
		case <-sweep.C:
			d.engine.Sweep()
		case <-stats.C:
			d.logStats()
		}
	}
}

// reload rebuilds the trust state: on SIGHUP from a fresh read of the
// config file, on the refresh tick only when the CRL (fetched or on disk)
// changed. A failure keeps the current trust state; live grants are kept
// either way.
func (d *daemon) reload(ctx context.Context, hup bool) {
	cfg := d.cfg
	if hup {
		fresh, err := LoadConfig(d.cfg.Path)
		if err != nil {
			d.log.Error("reload: config refused, keeping the current one", zap.Error(err))
			return
		}
		if differsInRules(d.cfg, &fresh) {
			d.log.Warn("reload: rule set, queues, policy, durations, crl.refresh or log.level changed; they take effect on restart")
		}
		cfg = &fresh
	}
	var fetch Fetcher
	if cfg.CRLURL != "" {
		fetch = d.fetch
	}
	if !hup && fetch == nil && stampOf(cfg.CRLFile) == d.crlStamp {
		return
	}
	trust, info, warnings, err := loadTrust(ctx, cfg, fetch)
	for _, w := range warnings {
		d.log.Warn("crl fetch failed, keeping the last good CRL", zap.Error(w))
	}
	if err != nil {
		d.log.Error("reload failed, keeping the current trust state", zap.Error(err))
		return
	}
	newStamp := stampOf(cfg.CRLFile)
	if !hup && newStamp == d.crlStamp {
		return
	}
	d.crlStamp = newStamp
	if hup {
		d.cfg.ServerPKCS12, d.cfg.ServerPasswordFile, d.cfg.ServerPasswordEnv, d.cfg.ServerCA = cfg.ServerPKCS12, cfg.ServerPasswordFile, cfg.ServerPasswordEnv, cfg.ServerCA
		d.cfg.CRLFile, d.cfg.CRLURL, d.cfg.KnockTolerance = cfg.CRLFile, cfg.CRLURL, cfg.KnockTolerance
	}
	d.engine.SetTrust(trust)
	msg := "trust reloaded (CRL refresh)"
	if hup {
		msg = "trust reloaded (SIGHUP)"
	}
	logTrust(d.log, msg, info)
}

// differsInRules reports whether b changes what only a restart applies.
func differsInRules(a, b *Config) bool {
	return fmt.Sprint(a.Rules) != fmt.Sprint(b.Rules) || a.Policy != b.Policy ||
		a.OpenDuration != b.OpenDuration || a.MaxGrants != b.MaxGrants ||
		a.KnockWorkers != b.KnockWorkers || a.KnockBacklog != b.KnockBacklog ||
		a.CRLRefresh != b.CRLRefresh || a.LogLevel != b.LogLevel
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

// decideGate is the gate queue's verdict function. It does not allocate.
func (d *daemon) decideGate(h *queue.Header) queue.Verdict {
	switch d.engine.Verdict(h.Src, h.Proto, h.DstPort) {
	case gate.Accept:
		return queue.Accept
	case gate.Reject:
		return queue.Reject
	}
	return queue.Drop
}

// holdGate is the gate queue's hold function: it holds a packet that
// races its own knock (see gate.Engine.Hold). It does not allocate.
func (d *daemon) holdGate(h *queue.Header) bool {
	return d.engine.Hold(h.Src, h.Proto, h.DstPort)
}

// releaseHeld is the engine's KnockDecided: the knock from src is decided,
// so the gate readers decide the packets they held for it. gateQ is
// complete before the readers run.
func (d *daemon) releaseHeld(src netip.Addr) {
	for _, g := range d.gateQ {
		g.Release(src)
	}
}

// handleKnock runs on a knock worker.
func (d *daemon) handleKnock(src netip.Addr, payload []byte) {
	d.engine.Knock(src, payload)
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
		zap.Uint64("gate_held", g.Held),
		zap.Uint64("gate_hold_timeouts", g.HoldTimeouts),
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
	VerdictMessages, VerdictErrors, Held, HoldTimeouts           uint64
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
		t.Held += s.Held.Load()
		t.HoldTimeouts += s.HoldTimeouts.Load()
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

// lockQueues makes sure only one sknockd serves these queues in this
// network namespace: it binds abstract Unix sockets named after them,
// which the kernel scopes to the namespace and frees when the process
// dies, even by kill -9.
func lockQueues(queues []uint16) (io.Closer, error) {
	var held multiCloser
	for _, q := range queues {
		l, err := net.Listen("unix", fmt.Sprintf("@sknockd/nfqueue/%d", q))
		if err != nil {
			held.Close()
			return nil, fmt.Errorf("another sknockd is already serving NFQUEUE %d in this network namespace (stop it first): %v", q, err)
		}
		held = append(held, l)
	}
	return held, nil
}

type multiCloser []io.Closer

func (m multiCloser) Close() error {
	for _, c := range m {
		c.Close()
	}
	return nil
}
