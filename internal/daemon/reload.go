package daemon

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"sknock/internal/config"
	"sknock/internal/control"
)

// reloadConfig applies the configuration file again (on SIGHUP, or for
// `sknock reload` over the control socket: trigger says which; see
// reload), logs a refusal, and remembers the outcome for `sknock status`.
// It returns the outcome and whether crl.refresh changed.
func (d *daemon) reloadConfig(ctx context.Context, trigger string) (control.Reload, bool) {
	d.notifyReloading()
	changed, refreshChanged, err := d.reload(ctx)
	d.ops.trustReloaded(err)
	d.notifyReloaded(err)
	outcome := control.Reload{Time: time.Now().UTC(), Trigger: trigger, Changed: changed}
	if err != nil {
		outcome.Error = err.Error()
		d.log.Error("reload refused, keeping the current configuration", zap.String("trigger", trigger), zap.Error(err))
	}
	d.lastReload = &outcome
	if d.hooks.Reloaded != nil {
		d.hooks.Reloaded(err)
	}
	return outcome, refreshChanged
}

// reload rebuilds the whole state from the configuration file, as the
// start does, and applies it: the trust state (bundle, CAs, CRL) is
// always rebuilt, a changed rule set is swapped in atomically, and the
// policy, durations and log level apply to what follows. Live grants and
// the replay memory are kept. A file that fails anywhere, or changes a
// restart-only key, is refused whole (the error says why) and the running
// state stays in force. It reports the changed keys and whether
// crl.refresh changed.
func (d *daemon) reload(ctx context.Context) (changed []string, refreshChanged bool, err error) {
	fresh, err := config.LoadConfig(d.run.cfg.Path)
	if err != nil {
		return nil, false, err
	}
	if err := config.RestartNeeded(d.run.cfg, &fresh); err != nil {
		return nil, false, err
	}
	// The files only, but for a CRL whose file does not exist yet (a
	// crl.url just added): the other fetches follow, off the loop
	// (startCRLRefresh).
	next, warnings, err := loadState(ctx, &fresh, trustLoad{which: fetchMissing, fetch: d.fetch, validators: &d.crl.validators})
	d.logWarnings("crl fetch failed", warnings)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", fresh.Path, err)
	}
	prev := d.run.cfg
	if err := d.apply(next, "trust reloaded (SIGHUP)"); err != nil {
		return nil, false, fmt.Errorf("apply the new rules (the old ones stay): %w", err)
	}
	if fresh.HasCRLURL() {
		d.startCRLRefresh(ctx)
	}
	changed = config.Changed(prev, &fresh)
	d.log.Info("config reloaded", zap.Strings("changed", changed), zap.String("protect", fresh.ProtectList()), zap.Stringer("policy", fresh.Policy))
	return changed, fresh.CRLRefresh != prev.CRLRefresh, nil
}
