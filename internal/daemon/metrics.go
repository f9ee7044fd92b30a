package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"sknock/gate"
	"sknock/packet"
	"sknock/pki"
	"sknock/rules"
)

// opsStats are the daemon's counters that no reader or engine keeps:
// what the maintenance loop and the rule watcher did. None is touched on
// the packet path.
type opsStats struct {
	trustReloads        atomic.Uint64 // trust states built and put in force (SIGHUP, CRL refresh)
	trustReloadFailures atomic.Uint64 // attempts refused; the old trust state stayed
	rulesRestored       atomic.Uint64 // findings the watcher restored
	rulesRepairFailed   atomic.Uint64 // findings it could not restore
	// rulesBroken is set while the last watcher pass left a finding
	// unrestored.
	rulesBroken atomic.Bool
	// warnings are the trust state's health warnings as last logged (at
	// each trust load and each hourly check), for the metrics.
	warnings atomic.Pointer[[]healthWarning]
	// knockLatency is how long a knock worker took to decide a knock
	// (crypto included). Observed on the knock workers only, never on the
	// gate's per-packet path.
	knockLatency prometheus.Histogram
}

func newOpsStats() *opsStats {
	return &opsStats{knockLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "sknock_knock_decision_seconds",
		Help: "Time a knock worker took to decide one knock (decrypt, verify, grant).",
		// 50 µs to about 100 ms: a knock costs an ECDH and two ECDSA
		// verifications; the top buckets show a worker starved of CPU.
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 12),
	})}
}

// setWarnings records the trust state's health warnings for the metrics.
func (o *opsStats) setWarnings(w []healthWarning) { o.warnings.Store(&w) }

// healthChecks names every health warning, so that the metric shows each
// one, 0 while it does not apply.
var healthChecks = []string{"no_crl", "crl_stale", "crl_next_update_soon", "server_certificate_expiry", "ca_certificate_expiry"}

// trustReloaded counts a trust reload attempt.
func (o *opsStats) trustReloaded(err error) {
	if err != nil {
		o.trustReloadFailures.Add(1)
		return
	}
	o.trustReloads.Add(1)
}

// rulesChecked counts what one pass of the rule watcher found.
func (o *opsStats) rulesChecked(findings []rules.Finding) {
	broken := false
	for _, f := range findings {
		if f.Err != nil {
			o.rulesRepairFailed.Add(1)
			broken = true
			continue
		}
		o.rulesRestored.Add(1)
	}
	o.rulesBroken.Store(broken)
}

// metricDesc is one metric the collector exports.
type metricDesc struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
}

func newDesc(name, help string, kind prometheus.ValueType, labels ...string) metricDesc {
	return metricDesc{prometheus.NewDesc(name, help, labels, nil), kind}
}

// collector exports the daemon's counters to Prometheus. It reads them
// when scraped: the engine's, every gate reader's own (summed here, so
// that the readers share no cache line on the packet path), the knock
// reader's, the trust state's and opsStats.
type collector struct {
	d       *daemon
	started time.Time

	buildInfo, startTime                              metricDesc
	knocks, knockPackets, knockShed, knockTruncated   metricDesc
	gateVerdicts, gatePackets, gateUnknown, gateAudit metricDesc
	held, holdTimeouts, holdOverflows                 metricDesc
	receiveErrors, verdictErrors                      metricDesc
	grants, replay                                    metricDesc
	trustReloads, trustFailures                       metricDesc
	crlAge, crlRevoked, crlNextUpdate                 metricDesc
	rulesRestored, rulesRepairFailed, rulesHealthy    metricDesc
	warnings                                          metricDesc
	all                                               []metricDesc
}

func newCollector(d *daemon, started time.Time) *collector {
	c := &collector{d: d, started: started}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue
	c.buildInfo = newDesc("sknock_build_info", "sknockd's version and the Go release it was built with; always 1.", gauge, "version", "goversion")
	c.startTime = newDesc("sknock_start_time_seconds", "When sknockd started, in Unix seconds.", gauge)
	c.knocks = newDesc("sknock_knocks_total", "Knocks decided, by verdict (grant, deny) and reason (granted for a grant).", counter, "verdict", "reason")
	c.knockPackets = newDesc("sknock_knock_packets_total", "Datagrams the knock reader received.", counter)
	c.knockShed = newDesc("sknock_knock_shed_total", "Knocks dropped undecided because every worker was busy and the backlog full.", counter)
	c.knockTruncated = newDesc("sknock_knock_truncated_total", "Knock datagrams longer than the reader copies, denied as malformed.", counter)
	c.gateVerdicts = newDesc("sknock_gate_verdicts_total", "Final verdicts on packets to protected ports, by verdict (accept, drop, reject).", counter, "verdict")
	c.gatePackets = newDesc("sknock_gate_packets_total", "Packets the gate readers received.", counter)
	c.gateUnknown = newDesc("sknock_gate_unknown_packets_total", "Gate packets that did not decode as TCP or UDP (dropped).", counter)
	c.gateAudit = newDesc("sknock_gate_audit_accepts_total", "Packets policy none accepted without a grant (would have been denied).", counter)
	c.held = newDesc("sknock_gate_held_packets_total", "Packets held while their source's knock was being decided.", counter)
	c.holdTimeouts = newDesc("sknock_gate_hold_timeouts_total", "Held packets settled because their knock took too long.", counter)
	c.holdOverflows = newDesc("sknock_gate_hold_overflows_total", "Packets that raced a knock but were decided at once because the hold was full.", counter)
	c.receiveErrors = newDesc("sknock_queue_receive_errors_total", "Receive errors on the NFQUEUE sockets, by queue role (gate, knock).", counter, "queue")
	c.verdictErrors = newDesc("sknock_queue_verdict_errors_total", "Verdicts the kernel refused, by queue role (gate, knock).", counter, "queue")
	c.grants = newDesc("sknock_grants", "Grants in the grant table (expired ones until the next sweep, at most a second).", gauge)
	c.replay = newDesc("sknock_replay_cache_entries", "Knocks remembered by the replay cache.", gauge)
	c.trustReloads = newDesc("sknock_trust_reloads_total", "Trust states (bundle, CAs, CRL) built and put in force after the start.", counter)
	c.trustFailures = newDesc("sknock_trust_reload_failures_total", "Reloads and CRL refreshes refused; the trust state in force stayed.", counter)
	c.crlAge = newDesc("sknock_crl_age_seconds", "Seconds since the CRL in force was issued (thisUpdate); absent without a CRL.", gauge)
	c.crlRevoked = newDesc("sknock_crl_revoked_serials", "Serials the CRL in force revokes.", gauge)
	c.crlNextUpdate = newDesc("sknock_crl_next_update_seconds", "Seconds until the CRL in force is due for replacement (nextUpdate); negative once stale; absent without one.", gauge)
	c.rulesRestored = newDesc("sknock_rules_restorations_total", "Changes to the rule set that the watcher found and restored.", counter)
	c.rulesRepairFailed = newDesc("sknock_rules_repair_failures_total", "Changes to the rule set that the watcher found and could not restore.", counter)
	c.rulesHealthy = newDesc("sknock_rules_healthy", "1 when the last check found the rule set whole or restored it, 0 when it is damaged.", gauge)
	c.warnings = newDesc("sknock_trust_warnings", "Health warnings in force, by check (no_crl, crl_stale, crl_next_update_soon, server_certificate_expiry, ca_certificate_expiry): how many apply (a CA each for per-CA checks); see the log's warn lines.", gauge, "check")
	c.all = []metricDesc{c.warnings, c.buildInfo, c.startTime, c.knocks, c.knockPackets, c.knockShed, c.knockTruncated,
		c.gateVerdicts, c.gatePackets, c.gateUnknown, c.gateAudit, c.held, c.holdTimeouts, c.holdOverflows,
		c.receiveErrors, c.verdictErrors, c.grants, c.replay, c.trustReloads, c.trustFailures,
		c.crlAge, c.crlRevoked, c.crlNextUpdate, c.rulesRestored, c.rulesRepairFailed, c.rulesHealthy}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.all {
		ch <- m.desc
	}
}

// Collect implements prometheus.Collector: it reads every counter once.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	emit := func(m metricDesc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, v, labels...)
	}
	d := c.d
	emit(c.buildInfo, 1, d.version, runtime.Version())
	emit(c.startTime, float64(c.started.UnixNano())/1e9)

	s := d.engine.Snapshot()
	emit(c.knocks, float64(s.Knocks[gate.ReasonNone.String()]), "grant", gate.ReasonNone.String())
	for _, r := range gate.Reasons() {
		emit(c.knocks, float64(s.Knocks[r.String()]), "deny", r.String())
	}
	for _, v := range []packet.Verdict{packet.Accept, packet.Drop, packet.Reject} {
		emit(c.gateVerdicts, float64(s.Gate[v.String()]), v.String())
	}
	emit(c.gateAudit, float64(s.WouldDeny))
	emit(c.held, float64(s.Deferred))
	emit(c.holdTimeouts, float64(s.HoldTimeouts))
	emit(c.holdOverflows, float64(s.HoldOverflows))
	emit(c.grants, float64(s.Grants))
	emit(c.replay, float64(s.Replay))

	g := d.gateTotals()
	emit(c.gatePackets, float64(g.Packets))
	emit(c.gateUnknown, float64(g.Unknown))
	emit(c.receiveErrors, float64(g.ReceiveErrors), "gate")
	emit(c.verdictErrors, float64(g.VerdictErrors), "gate")
	if d.knockQ != nil {
		k := d.knockQ.Stats()
		emit(c.knockPackets, float64(k.Received.Load()))
		emit(c.knockShed, float64(k.Shed.Load()))
		emit(c.knockTruncated, float64(k.Truncated.Load()))
		emit(c.receiveErrors, float64(k.ReceiveErrors.Load()), "knock")
		emit(c.verdictErrors, float64(k.VerdictErrors.Load()), "knock")
	}

	o := d.ops
	emit(c.trustReloads, float64(o.trustReloads.Load()))
	emit(c.trustFailures, float64(o.trustReloadFailures.Load()))
	emit(c.rulesRestored, float64(o.rulesRestored.Load()))
	emit(c.rulesRepairFailed, float64(o.rulesRepairFailed.Load()))
	emit(c.rulesHealthy, boolFloat(!o.rulesBroken.Load()))

	counts := map[string]int{}
	if w := o.warnings.Load(); w != nil {
		for _, x := range *w {
			counts[x.Check]++
		}
	}
	for _, check := range healthChecks {
		emit(c.warnings, float64(counts[check]), check)
	}

	crl := currentCRL(d.engine)
	emit(c.crlRevoked, float64(crl.Len()))
	now := d.engine.Now()
	if crl != nil && !crl.ThisUpdate.IsZero() {
		emit(c.crlAge, now.Sub(crl.ThisUpdate).Seconds())
	}
	if crl != nil && !crl.NextUpdate.IsZero() {
		emit(c.crlNextUpdate, crl.NextUpdate.Sub(now).Seconds())
	}
}

// currentCRL returns the CRL of the engine's trust state; nil without one.
func currentCRL(e *gate.Engine) *pki.CRL {
	if t := e.Trust(); t != nil && t.Verifier != nil {
		return t.Verifier.CRL()
	}
	return nil
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// newMetricsRegistry returns the registry a scrape reads: the daemon's
// collector, the knock latency histogram, and the Go runtime's and the
// process's standard metrics.
func newMetricsRegistry(d *daemon, started time.Time) (*prometheus.Registry, error) {
	reg := prometheus.NewPedanticRegistry()
	for _, c := range []prometheus.Collector{
		newCollector(d, started),
		d.ops.knockLatency,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return reg, nil
}

// metricsServer serves /metrics on the metrics.listen address.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// listenMetrics binds addr, so that a bad or taken address fails the
// start before anything is applied. Serving starts with serve.
func listenMetrics(addr string) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen %s: %w", addr, err)
	}
	return &metricsServer{ln: ln, done: make(chan struct{})}, nil
}

// serve answers scrapes from reg until close. At most a few scrapes run
// at once; more are answered 503, so a scraper storm cannot take the
// daemon's CPU from the knock workers.
func (m *metricsServer) serve(reg *prometheus.Registry, log *zap.Logger) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "sknockd: metrics at /metrics")
	})
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	go func() {
		defer close(m.done)
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener failed; sknockd goes on without it", zap.Error(err))
		}
	}()
	log.Info("metrics listening", zap.String("listen", m.ln.Addr().String()))
}

// close stops the listener and waits for its goroutine.
func (m *metricsServer) close() {
	if m == nil {
		return
	}
	if m.srv == nil {
		m.ln.Close()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = m.srv.Shutdown(ctx)
	<-m.done
}
