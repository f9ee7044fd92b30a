package daemon

import (
	"reflect"
	"runtime/debug"

	"go.uber.org/zap"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/trustload"
)

// state is what the daemon runs under, built whole before it is put in
// force: a configuration and the trust state read from the files it
// names. Start, SIGHUP and the CRL refresh each build a next state and
// hand it to apply; the maintenance loop alone holds and reads it.
type state struct {
	cfg   *config.Config
	trust *gate.Trust
	// certs are the bundle and CAs of trust: a CRL refresh builds the
	// next trust state over them (a SIGHUP reload reads them again).
	certs *trustload.Certs
	// info describes trust, for the log, the warnings and status.
	info TrustInfo
}

// apply puts next in force, in the one order that never uncovers a
// port: the rule set first (in one transaction, only when it changed or
// nothing was applied yet), whose failure leaves everything as it was;
// then the policy and grant duration, the knock answer, the trust state
// (ending the grants it revokes), the log level, and what the log lines
// and status read. Each apply starts a new generation: work begun under
// an older one (a CRL refresh) is moot. msg is the log line of the trust
// state ("trust loaded", "trust reloaded (SIGHUP)").
func (d *daemon) apply(next state, msg string) error {
	if d.gen == 0 || !reflect.DeepEqual(d.run.cfg.Rules, next.cfg.Rules) {
		if err := d.keeper.Apply(next.cfg.Rules); err != nil {
			return err
		}
	}
	d.engine.Reconfigure(next.cfg.Policy, next.cfg.OpenDuration)
	d.engine.SetProtocols(next.cfg.KnockProtocols)
	if d.knockQ != nil {
		// In step with the rules just applied: the knocks the reader
		// takes are answered as the knock ports' other datagrams are.
		d.knockQ.SetReject(next.cfg.Rules.RejectsKnocks())
	}
	newTrust := d.engine.Trust() != next.trust
	if newTrust {
		d.endRevoked(d.engine.SetTrust(next.trust))
	}
	d.level.SetLevel(logLevel(next.cfg.LogLevel).Level())
	d.decisions.setProtection(next.cfg.Rules)
	d.run = next
	d.gen++
	d.ops.setWarnings(logTrust(d.log, msg, next.info, d.engine.Now()))
	if newTrust || d.gen == 1 {
		returnMemory()
	}
	return nil
}

// returnMemory collects the garbage of building a trust state (the CRL
// files as read, their parse, and the state it replaced) and gives the
// memory back to the kernel. Without it an idle daemon holds it for long:
// the next collection comes only when the heap doubles the live CRL, and
// freed pages go back slowly, so a million-serial CRL kept the daemon at
// twice the RSS of --check (bench row 7b). A reload is rare; the forced
// collection costs a few milliseconds and the gate keeps answering.
func returnMemory() { debug.FreeOSMemory() }

// logWarnings logs the fetches that failed while a state was built.
func (d *daemon) logWarnings(msg string, warnings []error) {
	for _, w := range warnings {
		d.log.Warn(msg, zap.Error(w))
	}
}
