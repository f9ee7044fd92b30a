package daemon

import (
	"context"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"sknock/internal/control"
)

// loop is the maintenance loop: signals, grant sweeps, CRL refresh,
// trust warnings every healthEvery, and periodic counters. It returns the
// exit status.
func (d *daemon) loop(ctx context.Context, hup <-chan os.Signal, readerDone <-chan error, healthEvery time.Duration) int {
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	crl := time.NewTicker(d.run.cfg.CRLRefresh)
	defer crl.Stop()
	stats := time.NewTicker(time.Minute)
	defer stats.Stop()
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	if d.run.cfg.HasCRLURL() {
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
				crl.Reset(d.run.cfg.CRLRefresh)
			}
		case <-crl.C:
			d.startCRLRefresh(ctx)
		case r := <-d.crl.done:
			d.finishCRLRefresh(ctx, r)
		case <-health.C:
			warnings := logHealth(d.log, d.run.info, d.engine.Now())
			d.ops.setWarnings(warnings)
			if d.hooks.HealthLogged != nil {
				d.hooks.HealthLogged(warnings)
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
				crl.Reset(d.run.cfg.CRLRefresh)
			}
			call.reply <- control.Response{Reload: &outcome, Error: outcome.Error}
		}
	}
}

// watchRules checks the rules every interval until ctx is done, restoring
// them where another tool changed them and applying them again when the
// host's forwarding changed, and logs what it found. A repair that keeps
// failing is logged at most every loudEvery.
func (d *daemon) watchRules(ctx context.Context, interval time.Duration) {
	const loudEvery = 5 * time.Second
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var lastLoud, lastRefitLoud time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		// The rules follow the host's forwarding (rules.Keeper.Refit):
		// once it forwards they use the reject label, with which
		// revocation ends a forwarded connection; while it does not they
		// name no label, which spares every tracked connection the
		// kernel's labels extension.
		switch changed, labels, err := d.keeper.Refit(); {
		case err != nil:
			if now := time.Now(); now.Sub(lastRefitLoud) >= loudEvery {
				lastRefitLoud = now
				d.log.Error("host forwarding changed, and the rules could not follow; retrying at every rules check", zap.Bool("reject_label", labels), zap.Error(err))
			}
		case changed:
			d.log.Info("host forwarding changed; rules applied again", zap.Bool("reject_label", labels))
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
		if restoredAny(findings) {
			d.attributeWindow()
		}
		if len(findings) > 0 && d.hooks.Repaired != nil {
			d.hooks.Repaired(findings)
		}
	}
}

// crlState is what the maintenance loop keeps about the CRL refresh.
// The loop alone touches it, except validators, which the refresh
// goroutine uses too.
type crlState struct {
	// validators make the fetches conditional.
	validators crlValidators
	// refreshing is true while a refresh runs; done receives its
	// outcome (one at a time, so the buffer of one never blocks it).
	refreshing bool
	done       chan crlRefresh
}

// crlRefresh is what one refresh found.
type crlRefresh struct {
	// gen is the generation of the state it ran under; any state
	// applied meanwhile (a reload) makes the outcome moot.
	gen uint64
	// changed reports that the CRL files' contents differ from those of
	// the trust state in force; next is then the new state, or err says
	// why none could be built.
	changed  bool
	next     state
	err      error
	warnings []error // fetches that failed
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
	run, gen, fetch, vals := d.run, d.gen, d.fetch, &d.crl.validators
	go func() {
		r := crlRefresh{gen: gen}
		r.warnings = fetchCRLs(ctx, run.cfg, run.certs.CAs, trustLoad{which: fetchAll, fetch: fetch, validators: vals})
		if crlDigest(run.cfg) != run.info.Digest {
			r.changed = true
			r.next = state{cfg: run.cfg, certs: run.certs}
			r.next.trust, r.next.info, r.err = buildTrust(run.cfg, run.certs, false)
		}
		d.crl.done <- r
	}()
}

// finishCRLRefresh puts a refresh's outcome in force. A failure keeps the
// current trust state.
func (d *daemon) finishCRLRefresh(ctx context.Context, r crlRefresh) {
	d.crl.refreshing = false
	d.logWarnings("crl fetch failed, keeping the last good CRL", r.warnings)
	switch {
	case r.gen != d.gen:
		// A reload came in between and rebuilt the trust state from
		// the files; refresh again under the new configuration.
		d.startCRLRefresh(ctx)
	case !r.changed:
	case r.err != nil:
		d.ops.trustReloaded(r.err)
		d.log.Error("CRL refresh failed, keeping the current trust state", zap.Error(r.err))
	default:
		// The configuration is the one in force: the rules stay, so
		// apply cannot fail.
		d.ops.trustReloaded(nil)
		_ = d.apply(r.next, "trust reloaded (CRL refresh)")
	}
	if d.hooks.CRLRefreshed != nil {
		d.hooks.CRLRefreshed(r)
	}
}
