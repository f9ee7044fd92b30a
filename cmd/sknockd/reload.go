package main

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"go.uber.org/zap"
)

// configValues reads every key of configKeys from a Config, so that a
// reload can say which keys changed. A test checks that both tables name
// the same keys: a new key cannot be forgotten here.
var configValues = map[string]func(*Config) any{
	"server.pkcs12":                   func(c *Config) any { return c.ServerPKCS12 },
	"server.password_file":            func(c *Config) any { return c.ServerPasswordFile },
	"server.password_env":             func(c *Config) any { return c.ServerPasswordEnv },
	"server.ca":                       func(c *Config) any { return c.ServerCA },
	"crl.file":                        func(c *Config) any { return c.CRLFile },
	"crl.url":                         func(c *Config) any { return c.CRLURL },
	"crl.refresh":                     func(c *Config) any { return c.CRLRefresh },
	"crl.extra":                       func(c *Config) any { return c.CRLExtra },
	"crl.stale":                       func(c *Config) any { return c.CRLStaleRefuse },
	"crl.required":                    func(c *Config) any { return c.CRLRequired },
	"knock.ports":                     func(c *Config) any { return [2]uint16{c.Rules.KnockFirst, c.Rules.KnockLast} },
	"knock.min_length":                func(c *Config) any { return c.Rules.MinLength },
	"knock.protocols":                 func(c *Config) any { return c.KnockProtocols },
	"knock.timestamp_tolerance":       func(c *Config) any { return c.KnockTolerance },
	"knock.queue":                     func(c *Config) any { return c.Rules.KnockQueue },
	"knock.workers":                   func(c *Config) any { return c.KnockWorkers },
	"knock.backlog":                   func(c *Config) any { return c.KnockBacklog },
	"knock.rate_limit":                func(c *Config) any { return c.Rules.KnockRateLimit },
	"knock.replay_file":               func(c *Config) any { return c.ReplayFile },
	"gate.queue":                      func(c *Config) any { return c.Rules.GateQueue },
	"gate.queues":                     func(c *Config) any { return c.Rules.GateQueues },
	"gate.protect":                    func(c *Config) any { return c.Rules.Protect },
	"gate.always_allow":               func(c *Config) any { return c.Rules.AlwaysAllow },
	"gate.open_duration":              func(c *Config) any { return c.OpenDuration },
	"gate.policy":                     func(c *Config) any { return c.Policy },
	"gate.chain":                      func(c *Config) any { return c.Rules.Chain },
	"gate.reject_mark":                func(c *Config) any { return c.Rules.Mark },
	"gate.revoke_mark":                func(c *Config) any { return c.Rules.RevokeMark },
	"gate.max_grants":                 func(c *Config) any { return c.MaxGrants },
	"gate.max_grants_per_certificate": func(c *Config) any { return c.MaxGrantsPerCert },
	"gate.hold_queue":                 func(c *Config) any { return c.HoldQueue },
	"log.level":                       func(c *Config) any { return c.LogLevel },
	"metrics.listen":                  func(c *Config) any { return c.MetricsListen },
	"control.socket":                  func(c *Config) any { return c.ControlSocket },
}

// restartOnly are the keys a reload cannot apply: they name or size the
// kernel objects (queues, chain, mark) and the pools sknockd holds for its
// whole run. A restart applies them, and keeps the ports closed meanwhile.
var restartOnly = map[string]bool{
	"gate.queue": true, "gate.queues": true, "knock.queue": true, "gate.hold_queue": true,
	"gate.chain": true, "gate.reject_mark": true, "gate.revoke_mark": true,
	"knock.workers": true, "knock.backlog": true, "gate.max_grants": true, "gate.max_grants_per_certificate": true,
	"knock.replay_file": true, "metrics.listen": true, "control.socket": true,
}

// changedKeys lists, sorted, the keys whose values differ between a and b.
func changedKeys(a, b *Config) []string {
	var changed []string
	for key, value := range configValues {
		if !reflect.DeepEqual(value(a), value(b)) {
			changed = append(changed, key)
		}
	}
	slices.Sort(changed)
	return changed
}

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
	if d.hooks.reloaded != nil {
		d.hooks.reloaded(err)
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
	fresh, err := LoadConfig(d.cfg.Path)
	if err != nil {
		return false, err
	}
	changed := changedKeys(d.cfg, &fresh)
	var needRestart []string
	for _, key := range changed {
		if restartOnly[key] {
			needRestart = append(needRestart, key)
		}
	}
	if len(needRestart) > 0 {
		return false, fmt.Errorf("%s: %s changed; that takes a restart (which keeps the protected ports closed)", fresh.Path, strings.Join(needRestart, ", "))
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
	d.engine.SetProtocols(fresh.KnockProtocols)
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
	if hasCRLURL(&fresh) {
		d.startCRLRefresh(ctx)
	}
	d.log.Info("config reloaded", zap.Strings("changed", changed), zap.String("protect", protectList(&fresh)), zap.Stringer("policy", fresh.Policy))
	return refreshChanged, nil
}
