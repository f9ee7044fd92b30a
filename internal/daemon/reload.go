package daemon

import (
	"context"
	"fmt"
	"reflect"
	"sknock/internal/config"

	"go.uber.org/zap"
)

// reloadConfig applies the configuration file again on SIGHUP (see
// reload), logs a refusal, and reports whether crl.refresh changed.
func (d *daemon) reloadConfig(ctx context.Context) bool {
	d.notifyReloading()
	refreshChanged, err := d.reload(ctx)
	d.ops.trustReloaded(err)
	d.notifyReloaded(err)
	if err != nil {
		d.log.Error("reload refused, keeping the current configuration", zap.Error(err))
	}
	if d.hooks.Reloaded != nil {
		d.hooks.Reloaded(err)
	}
	return refreshChanged
}

// reload applies the configuration file again, whole: the trust state
// (bundle, CAs, CRL) is always rebuilt, a changed rule set is swapped in
// atomically, and the policy, durations and log level apply to what
// follows. Live grants and the replay memory are kept. A file that fails
// anywhere is refused whole (the error says why) and the running
// configuration stays in force. It reports whether crl.refresh changed.
func (d *daemon) reload(ctx context.Context) (refreshChanged bool, err error) {
	fresh, err := config.LoadConfig(d.cfg.Path)
	if err != nil {
		return false, err
	}
	changed := config.Changed(d.cfg, &fresh)
	if err := config.RestartNeeded(d.cfg, &fresh); err != nil {
		return false, err
	}
	// The files only, but for a CRL whose file does not exist yet (a
	// crl.url just added): the other fetches follow, off the loop
	// (startCRLRefresh).
	trust, certs, info, warnings, err := loadTrust(ctx, &fresh, trustLoad{which: fetchMissing, fetch: d.fetch, validators: &d.crl.validators})
	for _, w := range warnings {
		d.log.Warn("crl fetch failed", zap.Error(w))
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", fresh.Path, err)
	}
	if !reflect.DeepEqual(d.cfg.Rules, fresh.Rules) {
		if err := d.keeper.Apply(fresh.Rules); err != nil {
			return false, fmt.Errorf("apply the new rules (the old ones stay): %w", err)
		}
	}
	d.engine.Reconfigure(fresh.Policy, fresh.OpenDuration)
	if d.knockQ != nil {
		// In step with the rules just applied: the knocks the reader
		// takes are answered as the knock ports' other datagrams are.
		d.knockQ.SetReject(fresh.Rules.RejectsKnocks())
	}
	d.endRevoked(d.engine.SetTrust(trust))
	d.level.SetLevel(logLevel(fresh.LogLevel).Level())
	d.crl.certs, d.crl.info = certs, info
	refreshChanged = fresh.CRLRefresh != d.cfg.CRLRefresh
	d.cfg = &fresh
	d.decisions.setProtection(fresh.Rules)
	d.ops.setWarnings(logTrust(d.log, "trust reloaded (SIGHUP)", info, d.engine.Now()))
	if fresh.HasCRLURL() {
		d.startCRLRefresh(ctx)
	}
	d.log.Info("config reloaded", zap.Strings("changed", changed), zap.String("protect", fresh.ProtectList()), zap.Stringer("policy", fresh.Policy))
	return refreshChanged, nil
}
