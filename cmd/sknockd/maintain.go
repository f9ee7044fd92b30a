package main

import (
	"context"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"sknock/gate"
	"sknock/internal/control"
	"sknock/internal/trustload"
)

// loop is the maintenance loop: signals, grant sweeps, CRL refresh,
// trust warnings every healthEvery, and periodic counters. It returns the
// exit status.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal, readerDone <-chan error, healthEvery time.Duration) int {
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	crl := time.NewTicker(d.cfg.CRLRefresh)
	defer crl.Stop()
	stats := time.NewTicker(time.Minute)
	defer stats.Stop()
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	if hasCRLURL(d.cfg) {
		d.startCRLRefresh(ctx) // the start fetched only missing CRLs
	}
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
			if _, refreshChanged := d.reloadConfig(ctx, "SIGHUP"); refreshChanged {
				crl.Reset(d.cfg.CRLRefresh)
			}
		case <-crl.C:
			d.startCRLRefresh(ctx)
		case r := <-d.crl.done:
			d.finishCRLRefresh(ctx, r)
		case <-health.C:
			warnings := logHealth(d.log, d.crl.info, d.engine.Now())
			d.ops.setWarnings(warnings)
			if d.hooks.healthLogged != nil {
				d.hooks.healthLogged(warnings)
			}
		case <-sweep.C:
			d.engine.Sweep()
		case <-stats.C:
			d.logStats()
		case call := <-d.control:
			if call.req.Command != control.CommandReload {
				call.reply <- d.answerControl(call.req)
				continue
			}
			outcome, refreshChanged := d.reloadConfig(ctx, "sknock reload")
			if refreshChanged {
				crl.Reset(d.cfg.CRLRefresh)
			}
			call.reply <- control.Response{Reload: &outcome, Error: outcome.Error}
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
		d.ops.rulesChecked(findings)
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

// crlState is what the maintenance loop keeps about the trust state's
// CRLs. The loop alone touches it, except validators, which the refresh
// goroutine uses too.
type crlState struct {
	// certs are the bundle and CAs of the trust state in force: a CRL
	// refresh builds the next trust state over them (a SIGHUP reload
	// reads them again).
	certs *trustload.Certs
	// info describes the trust state in force.
	info TrustInfo
	// validators make the fetches conditional.
	validators crlValidators
	// refreshing is true while a refresh runs; done receives its
	// outcome (one at a time, so the buffer of one never blocks it).
	refreshing bool
	done       chan crlRefresh
}

// crlRefresh is what one refresh found.
type crlRefresh struct {
	// cfg is the configuration it ran under; a reload meanwhile makes
	// the outcome moot.
	cfg *Config
	// changed reports that the CRL files' contents differ from those of
	// the trust state in force; trust and info are then the new state,
	// or err says why none could be built.
	changed  bool
	trust    *gate.Trust
	info     TrustInfo
	err      error
	warnings []error // fetches that failed
}

// hasCRLURL reports whether any CRL is fetched from a URL.
func hasCRLURL(c *Config) bool {
	for _, src := range crlSources(c) {
		if src.URL != "" {
			return true
		}
	}
	return false
}

// startCRLRefresh starts a refresh unless one runs: on its own goroutine
// it fetches every CRL URL (conditionally) into its file and, when the
// files' contents changed, builds the next trust state. A slow or hung
// CRL server delays nothing else: the loop goes on sweeping grants and
// answering signals, and a tick that finds a refresh still running (the
// fetch timeout is 10 s) skips.
func (d *daemon) startCRLRefresh(ctx context.Context) {
	if d.crl.refreshing {
		return
	}
	d.crl.refreshing = true
	cfg, certs, digest, fetch, vals := d.cfg, d.crl.certs, d.crl.info.Digest, d.fetch, &d.crl.validators
	go func() {
		r := crlRefresh{cfg: cfg}
		r.warnings = fetchCRLs(ctx, cfg, certs.CAs, trustLoad{which: fetchAll, fetch: fetch, validators: vals})
		if crlDigest(cfg) != digest {
			r.changed = true
			r.trust, r.info, r.err = buildTrust(cfg, certs, false)
		}
		d.crl.done <- r
	}()
}

// finishCRLRefresh puts a refresh's outcome in force. A failure keeps the
// current trust state.
func (d *daemon) finishCRLRefresh(ctx context.Context, r crlRefresh) {
	d.crl.refreshing = false
	for _, w := range r.warnings {
		d.log.Warn("crl fetch failed, keeping the last good CRL", zap.Error(w))
	}
	switch {
	case r.cfg != d.cfg:
		// A reload came in between and rebuilt the trust state from
		// the files; refresh again under the new configuration.
		d.startCRLRefresh(ctx)
	case !r.changed:
	case r.err != nil:
		d.ops.trustReloaded(r.err)
		d.log.Error("CRL refresh failed, keeping the current trust state", zap.Error(r.err))
	default:
		d.crl.info = r.info
		d.endRevoked(d.engine.SetTrust(r.trust))
		d.ops.trustReloaded(nil)
		d.ops.setWarnings(logTrust(d.log, "trust reloaded (CRL refresh)", r.info, d.engine.Now()))
	}
	if d.hooks.crlRefreshed != nil {
		d.hooks.crlRefreshed(r)
	}
}
