package daemon

import (
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"

	"sknock/internal/config"
)

// When a warning starts before an expiry.
const (
	// certWarnBefore: the server and CA certificates, 30 days ahead,
	// time enough to renew and hand out.
	certWarnBefore = 30 * 24 * time.Hour
	// crlWarnBeforeMax: a CRL's next update, a quarter of its validity
	// ahead but at most 7 days (a 30-day CRL warns a week before; one
	// re-signed hourly for a day warns 6 hours before).
	crlWarnBeforeMax = 7 * 24 * time.Hour
	// healthEvery repeats the warnings while they last.
	healthEvery = time.Hour
)

// healthWarning is one way the protection is weaker than it looks.
type healthWarning struct {
	// Check is the warning's stable name: no_crl, crl_stale,
	// crl_next_update_soon, server_certificate_expiry or
	// ca_certificate_expiry.
	Check string
	// Text says what is wrong and what to do, in a sentence.
	Text string
}

// healthWarnings lists what is weak in the trust state at now: no CRL
// (or a CA without one), a CRL past or near its next update, the server
// or a CA certificate expired or near expiry.
func healthWarnings(info TrustInfo, now time.Time) []healthWarning {
	var out []healthWarning
	add := func(check, format string, args ...any) {
		out = append(out, healthWarning{Check: check, Text: fmt.Sprintf(format, args...)})
	}
	switch {
	case len(info.CRLs) == 0 && len(info.Pending) == 0:
		add("no_crl", "no CRL configured (crl.file is empty): revocation is off, a stolen client certificate can never be refused; set crl.file (and crl.url), or crl.required: true to make this an error")
	case len(info.Pending) == 0:
		for _, ca := range info.CAs {
			if ca.CRL == "" {
				add("no_crl", "CA %s has no CRL among crl.file and crl.extra: the certificates it issued can never be revoked", ca.Subject)
			}
		}
	}
	for _, crl := range info.CRLs {
		if crl.NextUpdate.IsZero() {
			continue
		}
		left := crl.NextUpdate.Sub(now)
		switch {
		case left < 0 && info.StaleRefuse:
			add("crl_stale", "%s (CRL of %s) is past its next update %s: EVERY knock is refused (crl.stale: refuse) until a fresh CRL is published (sknock pki crl)", crl.File, crl.Issuer, stamp(crl.NextUpdate))
		case left < 0:
			add("crl_stale", "%s (CRL of %s) is past its next update %s: its revocations still apply, but certificates revoked since are not refused; publish a fresh CRL (sknock pki crl)", crl.File, crl.Issuer, stamp(crl.NextUpdate))
		case left < crlWarnBefore(crl):
			add("crl_next_update_soon", "%s (CRL of %s) reaches its next update %s, in %s: publish a fresh CRL before then (sknock pki crl)", crl.File, crl.Issuer, stamp(crl.NextUpdate), roundLeft(left))
		}
	}
	if left := info.ServerNotAfter.Sub(now); left < certWarnBefore {
		add("server_certificate_expiry", "server certificate %s %s: clients cannot encrypt knocks to an expired one; issue a new one (sknock pki renew) and give clients the new certificate", info.Server, expiryText(info.ServerNotAfter, left))
	}
	for _, ca := range info.CAs {
		if left := ca.NotAfter.Sub(now); left < certWarnBefore {
			add("ca_certificate_expiry", "CA certificate %s %s: no certificate it issued is valid after that", ca.Subject, expiryText(ca.NotAfter, left))
		}
	}
	return out
}

// crlWarnBefore is how long before its next update a CRL is warned about.
func crlWarnBefore(crl CRLInfo) time.Duration {
	w := crl.NextUpdate.Sub(crl.ThisUpdate) / 4
	return min(max(w, 0), crlWarnBeforeMax)
}

func expiryText(end time.Time, left time.Duration) string {
	if left < 0 {
		return "EXPIRED at " + stamp(end)
	}
	return fmt.Sprintf("expires at %s, in %s", stamp(end), roundLeft(left))
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// roundLeft writes a remaining time in days, or hours under two days.
func roundLeft(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// logTrust logs a trust state just loaded, then its warnings, which it
// returns.
func logTrust(log *zap.Logger, msg string, info TrustInfo, now time.Time) []healthWarning {
	cas := make([]string, len(info.CAs))
	for i, ca := range info.CAs {
		cas[i] = ca.Subject
	}
	fields := []zap.Field{
		zap.String("server", info.Server),
		zap.Time("server_not_after", info.ServerNotAfter),
		zap.Strings("cas", cas),
		zap.Int("crl_revoked", info.Serials()),
	}
	for _, crl := range info.CRLs {
		fields = append(fields, zap.Dict(strings.ReplaceAll(crl.Key, ".", "_"), zap.String("file", crl.File), zap.String("issuer", crl.Issuer),
			zap.Int("revoked", crl.Serials), zap.Time("next_update", crl.NextUpdate)))
	}
	log.Info(msg, fields...)
	return logHealth(log, info, now)
}

// logHealth logs each warning of the trust state at now.
func logHealth(log *zap.Logger, info TrustInfo, now time.Time) []healthWarning {
	warnings := healthWarnings(info, now)
	for _, w := range warnings {
		log.Warn(w.Text, zap.String("check", w.Check))
	}
	return warnings
}

// Check is --check: it loads the whole trust state without
// fetching, prints the warnings to stderr and a summary to stdout, and
// returns the exit status (2 when anything fails to load, including a
// CA without a CRL under crl.required).
func Check(cfg *config.Config, stdout, stderr io.Writer, now time.Time) int {
	certs, err := loadCerts(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
		return 2
	}
	_, info, err := buildTrust(cfg, certs, true)
	if err != nil {
		fmt.Fprintf(stderr, "sknockd: %s: %v\n", cfg.Path, err)
		return 2
	}
	for _, src := range info.Pending {
		fmt.Fprintf(stderr, "sknockd: warning: %s %s does not exist yet: sknockd fetches it from %s at start, and refuses to start if that fails (not checked here)\n", src.FileKey(), src.File, src.URL)
	}
	for _, w := range healthWarnings(info, now) {
		fmt.Fprintf(stderr, "sknockd: warning: %s\n", w.Text)
	}
	if err := replayFileProblem(cfg.ReplayFile); err != nil {
		fmt.Fprintf(stderr, "sknockd: warning: the replay memory cannot be kept across restarts (%v): after each start every knock is refused for the timestamp tolerance (%s) and a second, so that none granted before it is granted again\n", err, cfg.KnockTolerance)
	}
	fmt.Fprintf(stdout, "sknockd: %s is valid: server %s, %d CA(s), %d CRL(s) revoking %d serial(s), protecting %s with policy %s\n",
		cfg.Path, info.Server, len(info.CAs), len(info.CRLs), info.Serials(), cfg.ProtectList(), cfg.Policy)
	return 0
}
