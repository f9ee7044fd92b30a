package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"sknock/rules"
)

// Reload says what applies a changed key: a reload (SIGHUP) or only a
// restart.
type Reload int

const (
	// Live keys are applied by a reload.
	Live Reload = iota
	// Restart keys name or size the kernel objects (queues, chain, marks)
	// and the pools and sockets sknockd holds for its whole run; a reload
	// that changes one is refused whole. A restart applies them and keeps
	// the ports closed meanwhile.
	Restart
)

// Key is one key of the configuration file: how it is read, how it is
// compared, what applies a change, and what the README says of it.
type Key struct {
	// Name is "section.key"; DESIGN.md fixes the names it lists.
	Name string
	// Default is the default as the README shows it.
	Default string
	// Reload is what applies a change of the key.
	Reload Reload
	// Doc is the key's one-line description in the README.
	Doc string
	value
}

// Section is the part of the name before the dot.
func (k *Key) Section() string { s, _, _ := strings.Cut(k.Name, "."); return s }

// Get returns the key's value in c, for comparing two configurations.
func (k *Key) Get(c *Config) any { return k.get(c) }

// maxTimestampTolerance bounds knock.timestamp_tolerance: a knock is
// accepted this long either side of the host's clock, so a captured knock
// can be replayed from its own source (to another host sharing the key,
// or after a restart) for that long. Clock skew beyond minutes wants NTP,
// not a wider window.
const maxTimestampTolerance = 5 * time.Minute

// keys is every key the file may hold, in the README's order; sections
// appear in the order of their first key. ParseConfig, Changed and
// RestartNeeded read this table alone, and a test checks the README's key
// reference and restart-only lists against it.
var keys = []Key{
	{Name: "server.pkcs12", Default: "`/etc/sknock/server.pfx`", value: stringField(func(c *Config) *string { return &c.ServerPKCS12 }),
		Doc: "the gatekeeper's PKCS#12 bundle: key, certificate (clients encrypt to it), CA"},
	{Name: "server.password_file", Default: "`/etc/sknock/server.pass`", value: stringField(func(c *Config) *string { return &c.ServerPasswordFile }),
		Doc: "file whose first line is the bundle password"},
	{Name: "server.password_env", Default: "—", value: stringField(func(c *Config) *string { return &c.ServerPasswordEnv }),
		Doc: "or: name of an environment variable holding it"},
	{Name: "server.ca", Default: "—", value: stringField(func(c *Config) *string { return &c.ServerCA }),
		Doc: "PEM file of CA certificates, roots and intermediates (one signed by another listed CA is an intermediate); default: the CA in the bundle"},
	{Name: "crl.file", Default: "—", value: stringField(func(c *Config) *string { return &c.CRLFile }),
		Doc: "the CA's CRL, DER or PEM (signature checked; delta and scoped CRLs refused); none: a warning (see [CRLs for a fleet](#crls-for-a-fleet))"},
	{Name: "crl.url", Default: "—", value: stringField(func(c *Config) *string { return &c.CRLURL }),
		Doc: "http(s) URL fetched into `crl.file`: at start when the file is missing, then every `refresh`, conditionally, at most 16 MiB, never https→http (a failure keeps the last good CRL). A source belongs to the CA whose CRL it holds: a CRL of another CA is refused (the warning names both), so is an older one of the same CA (CRL numbers compared per CA only), and a first fetch refuses a CRL past its next update or one of a CA another source holds"},
	{Name: "crl.refresh", Default: "`30m`", value: durationField(func(c *Config) *time.Duration { return &c.CRLRefresh }, time.Second, 7*24*time.Hour),
		Doc: "how often to fetch the CRLs, or re-read their files (applied when their contents changed)"},
	{Name: "crl.extra", Default: "—", value: crlExtra,
		Doc: "CRLs of further CAs, one per CA: a list of `{file: PATH, url: URL}` (url optional)"},
	{Name: "crl.stale", Default: "`warn`", value: crlStale,
		Doc: "a CRL past its nextUpdate: `warn` (keep applying it, warn hourly) or `refuse` (refuse every knock until a fresh one arrives)"},
	{Name: "crl.required", Default: "`false`", value: boolField(func(c *Config) *bool { return &c.CRLRequired }),
		Doc: "`true`: a CA without a CRL is a configuration error rather than a warning"},
	{Name: "knock.ports", Default: "`10000:60000`", value: knockPorts,
		Doc: "UDP ports knocks arrive on"},
	{Name: "knock.min_length", Default: "`300`", value: intField(func(c *Config) *int { return &c.Rules.MinLength }, 0, 65487),
		Doc: "smallest UDP payload taken for a knock (also the iptables length match)"},
	{Name: "knock.timestamp_tolerance", Default: "`7s`", value: durationField(func(c *Config) *time.Duration { return &c.KnockTolerance }, time.Second, maxTimestampTolerance),
		Doc: "allowed clock difference, and the replay window (1s to 5m)"},
	{Name: "knock.queue", Default: "`100`", Reload: Restart, value: queueField(func(c *Config) *uint16 { return &c.Rules.KnockQueue }),
		Doc: "NFQUEUE number for knocks"},
	{Name: "knock.workers", Default: "`0` (one per CPU)", Reload: Restart, value: intField(func(c *Config) *int { return &c.KnockWorkers }, 0, 1024),
		Doc: "goroutines checking knocks"},
	{Name: "knock.backlog", Default: "`0` (1024)", Reload: Restart, value: intField(func(c *Config) *int { return &c.KnockBacklog }, 0, 65536), // ×4 KiB of buffers each
		Doc: "knocks waiting for a worker before new ones are shed (v1 knocks and v2 knocks whose mac1 is right each have a lane this long, the v2 lane served first)"},
	{Name: "knock.rate_limit", Default: "`20/second`", value: stringField(func(c *Config) *string { return &c.Rules.KnockRateLimit }),
		Doc: "per-source kernel rate limit (hashlimit, IPv6 per /64) before any crypto; its table holds 262,144 sources, each forgotten once idle for the time its burst of 5 takes to refill (100 ms–1 s); `\"\"` = none"},
	{Name: "knock.protocols", Default: "`[1, 2]`", value: protocols,
		Doc: "the knock wire versions accepted: `[2]` refuses v1 outright (its datagrams are refused as `protocol_refused` on the receive goroutine, without an ECDH), `[1]` refuses v2"},
	{Name: "knock.replay_file", Default: "`/var/lib/sknock/replay`", Reload: Restart, value: stringField(func(c *Config) *string { return &c.ReplayFile }),
		Doc: "keeps the replay memory across restarts (a granted knock's hash is written before the grant; compacted as it grows; the directory is created, 0700); unwritable or `\"\"`: after each start every knock is refused for the tolerance and a second. Beside it, `<file>.conns` keeps the record of which certificate opened each connection (rewritten when it changed, at most every 2 s, and at stop), so that a revocation after a restart still ends the connections opened before it"},
	{Name: "gate.queue", Default: "`101`", Reload: Restart, value: queueField(func(c *Config) *uint16 { return &c.Rules.GateQueue }),
		Doc: "NFQUEUE number for protected ports"},
	{Name: "gate.queues", Default: "`1`", Reload: Restart, value: intField(func(c *Config) *int { return &c.Rules.GateQueues }, 1, rules.MaxGateQueues),
		Doc: "spread the gate over this many consecutive queues (`--queue-balance`, one reader each; helps only with many sources and spare cores)"},
	{Name: "gate.protect", Default: "required", value: portList(func(c *Config) *[]rules.PortSpec { return &c.Rules.Protect }),
		Doc: "hidden ports: `tcp/N`, `udp/N`, ranges `tcp/8000-8100`, `tcp/*` or `udp/*` (every port not always allowed; `udp/*` leaves out the knock ports); `config.yaml`'s `[tcp/2000, tcp/3000, udp/8000]` is an example"},
	{Name: "gate.always_allow", Default: "`[tcp/22]`", value: portList(func(c *Config) *[]rules.PortSpec { return &c.Rules.AlwaysAllow }),
		Doc: "never hidden, never knocked"},
	{Name: "gate.open_duration", Default: "`15s`", value: durationField(func(c *Config) *time.Duration { return &c.OpenDuration }, time.Second, 24*time.Hour),
		Doc: "how long a grant lasts"},
	{Name: "gate.policy", Default: "`drop`", value: policy,
		Doc: "`drop`, `reject` (looks closed) or `none` (audit: accept and log \"would deny\")"},
	{Name: "gate.chain", Default: "`SKNOCK`", Reload: Restart, value: stringField(func(c *Config) *string { return &c.Rules.Chain }),
		Doc: "the iptables chain"},
	{Name: "gate.reject_mark", Default: "`0x40000000`", Reload: Restart, value: rejectMark,
		Doc: "packet mark bit of the signal that hands a packet to refuse back to the rules (cleared by the gate chain's first rule; the refusal travels as conntrack label 127); must not include the grant signal `0x20000000`"},
	{Name: "gate.revoke_mark", Default: "(deprecated)", Reload: Restart, value: revokeMark,
		Doc: "ignored, with a warning at start: revocation destroys the connections (socket destroy, conntrack deletion); still parses so old files load"},
	{Name: "gate.max_grants", Default: "`0` (4194304)", Reload: Restart, value: intField(func(c *Config) *int { return &c.MaxGrants }, 0, 1<<26),
		Doc: "bound on live grants"},
	{Name: "gate.max_grants_per_certificate", Default: "`4096`", Reload: Restart, value: intField(func(c *Config) *int { return &c.MaxGrantsPerCert }, 0, 1<<26),
		Doc: "bound on one certificate's live grants (an insider cannot fill the table); `0`: none"},
	{Name: "gate.hold_queue", Default: "the one after the gate queues (`102`)", Reload: Restart, value: queueField(func(c *Config) *uint16 { return &c.HoldQueue }),
		Doc: "NFQUEUE where a SYN racing its own knock waits (no rule names it)"},
	{Name: "log.level", Default: "`info`", value: logLevel,
		Doc: "`debug`, `info`, `warn`, `error`"},
	{Name: "metrics.listen", Default: "`\"\"` (off)", Reload: Restart, value: listenAddr,
		Doc: "`host:port` of the Prometheus listener (`/metrics`), e.g. `127.0.0.1:9466`; plain HTTP without authentication, so keep it on loopback or a management network"},
	{Name: "control.socket", Default: "`/run/sknock/control.sock`", Reload: Restart, value: socketPath,
		Doc: "root-only unix socket (directory 0700, socket 0600, caller's uid checked) for `sknock grants` and `sknock status`; `\"\"`: none"},
}

// Keys returns every key the file may hold, in the README's order.
func Keys() []Key { return slices.Clone(keys) }

// byName finds a key of the table.
func byName(name string) *Key {
	for i := range keys {
		if keys[i].Name == name {
			return &keys[i]
		}
	}
	return nil
}

// sections are the sections of the table, in order.
func sections() []string {
	var out []string
	for i := range keys {
		if s := keys[i].Section(); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// Changed lists, sorted, the keys whose values differ between a and b.
func Changed(a, b *Config) []string {
	var changed []string
	for i := range keys {
		if !reflect.DeepEqual(keys[i].get(a), keys[i].get(b)) {
			changed = append(changed, keys[i].Name)
		}
	}
	slices.Sort(changed)
	return changed
}

// RestartNeeded refuses a reload from running to next that changes a
// restart-only key, naming the keys.
func RestartNeeded(running, next *Config) error {
	var restart []string
	for _, name := range Changed(running, next) {
		if byName(name).Reload == Restart {
			restart = append(restart, name)
		}
	}
	if len(restart) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s changed; that takes a restart (which keeps the protected ports closed)", next.Path, strings.Join(restart, ", "))
}
