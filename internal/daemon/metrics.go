package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"sknock/gate"
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
	// windowAttributed and windowUngranted count the connections to
	// protected ports found after a restore of the rules that the gate
	// had not seen: recorded to their source's live grant, or left (no
	// live grant).
	windowAttributed, windowUngranted atomic.Uint64
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

// collector exports the daemon's counters (the counters list) and the
// gauges only Prometheus shows (build, start, rules health, the CRL in
// force, trust warnings). It reads them when scraped.
type collector struct {
	d       *daemon
	started time.Time

	// counted are the descs of the counters list, by metric name.
	counted map[string]*prometheus.Desc

	buildInfo, startTime              metricDesc
	crlAge, crlRevoked, crlNextUpdate metricDesc
	rulesHealthy, warnings            metricDesc
	all                               []metricDesc
}

func newCollector(d *daemon, started time.Time) *collector {
	c := &collector{d: d, started: started, counted: map[string]*prometheus.Desc{}}
	gauge := prometheus.GaugeValue
	for i := range counters {
		k := &counters[i]
		if k.metric == "" || c.counted[k.metric] != nil {
			continue
		}
		labels := k.labels
		if k.with[0] != "" {
			labels = append(slices.Clone(labels), k.with[0])
		}
		c.counted[k.metric] = prometheus.NewDesc(k.metric, k.help, labels, nil)
	}
	c.buildInfo = newDesc("sknock_build_info", "sknockd's version and the Go release it was built with; always 1.", gauge, "version", "goversion")
	c.startTime = newDesc("sknock_start_time_seconds", "When sknockd started, in Unix seconds.", gauge)
	c.crlAge = newDesc("sknock_crl_age_seconds", "Seconds since the CRL in force was issued (thisUpdate); absent without a CRL.", gauge)
	c.crlRevoked = newDesc("sknock_crl_revoked_serials", "Serials the CRL in force revokes.", gauge)
	c.crlNextUpdate = newDesc("sknock_crl_next_update_seconds", "Seconds until the CRL in force is due for replacement (nextUpdate); negative once stale; absent without one.", gauge)
	c.rulesHealthy = newDesc("sknock_rules_healthy", "1 when the last check found the rule set whole or restored it, 0 when it is damaged.", gauge)
	c.warnings = newDesc("sknock_trust_warnings", "Health warnings in force, by check (no_crl, crl_stale, crl_next_update_soon, server_certificate_expiry, ca_certificate_expiry): how many apply (a CA each for per-CA checks); see the log's warn lines.", gauge, "check")
	c.all = []metricDesc{c.warnings, c.buildInfo, c.startTime, c.crlAge, c.crlRevoked, c.crlNextUpdate, c.rulesHealthy}
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, desc := range c.counted {
		ch <- desc
	}
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

	r := d.read()
	for i := range counters {
		k := &counters[i]
		if k.metric == "" {
			continue
		}
		kind := prometheus.CounterValue
		if k.gauge {
			kind = prometheus.GaugeValue
		}
		for _, s := range k.read(r) {
			labels := s.labels
			if k.with[0] != "" {
				labels = append(slices.Clone(labels), k.with[1])
			}
			ch <- prometheus.MustNewConstMetric(c.counted[k.metric], kind, float64(s.value), labels...)
		}
	}

	o := d.ops
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
