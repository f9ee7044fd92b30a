package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"
)

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
		findings := d.keeper.Repair()
		for _, f := range findings {
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
		if len(findings) > 0 && d.hooks.repaired != nil {
			d.hooks.repaired(findings)
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
	d.endRevoked(d.engine.SetTrust(trust))
	logTrust(d.log, "trust reloaded (CRL refresh)", info)
}
