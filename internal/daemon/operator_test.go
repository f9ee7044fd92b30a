package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/control"
	"sknock/internal/metrictest"
	"sknock/internal/testenv"
	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
)

// operatorReports are what the operator-facing hooks reported.
type operatorReports struct {
	metrics  reports[string]
	watchdog reports[error]
}

// runOperatorDaemon is runDaemon with deps changed by change (which may
// set the notifier, control socket and watchdog) and the operator hooks
// recorded.
func runOperatorDaemon(t *testing.T, cfg *config.Config, f *fakeOS, change func(*OSDeps)) (*testDaemon, *operatorReports) {
	t.Helper()
	ops := &operatorReports{}
	d := runDaemon(t, cfg, f, func(deps *OSDeps) {
		deps.Hooks.MetricsServing = ops.metrics.add
		deps.Hooks.Watchdog = ops.watchdog.add
		if change != nil {
			change(deps)
		}
	})
	return d, ops
}

// scrape returns the body of GET http://addr/metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	return string(body)
}

// TestMetricsScrapeDuringKnockFlood scrapes while a flood of knocks (good,
// malformed and replayed) runs through the daemon's knock queue, then
// checks the final scrape counts every knock by verdict and reason, the
// latency histogram saw each, and promtool (where installed) accepts the
// exposition.
func TestMetricsScrapeDuringKnockFlood(t *testing.T) {
	dir, cfg := daemonPKI(t)
	cfg.MetricsListen = "127.0.0.1:0"
	f := newFakeOS()
	d, ops := runOperatorDaemon(t, &cfg, f, nil)
	addr := ops.metrics.next(t, "metrics listener")

	good := sealFor(t, dir, "alice", 2000, "198.18.0.2")
	const flood = 300 // bounded: malformed knocks, cheap to decide
	stop := make(chan struct{})
	scrapes := make(chan int, 1)
	go func() { // scrape all through the flood
		n := 0
		defer func() { scrapes <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Get("http://" + addr + "/metrics")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				n++
			}
		}
	}()
	injectKnock(t, f, "198.18.0.2", good)
	injectKnock(t, f, "198.18.0.2", good) // replayed
	for i := range flood {
		injectKnock(t, f, fmt.Sprintf("198.18.1.%d", i%250+1), bytes.Repeat([]byte{byte(i)}, 400))
	}
	for range flood + 2 {
		d.knocks.next(t, "knock decision")
	}
	close(stop)
	if n := <-scrapes; n == 0 {
		t.Error("no scrape completed during the flood")
	}
	if v := synVerdict(t, f, "198.18.0.2"); !grantVerdict(v) {
		t.Fatalf("SYN after the grant: %+v, want a grant", v)
	}

	body := scrape(t, addr)
	for series, want := range map[string]float64{
		`sknock_knocks_total{reason="granted",verdict="grant"}`:  1,
		`sknock_knocks_total{reason="replay",verdict="deny"}`:    1,
		`sknock_knocks_total{reason="malformed",verdict="deny"}`: flood,
		`sknock_knocks_total{reason="revoked",verdict="deny"}`:   0,
		`sknock_knock_decision_seconds_count`:                    flood + 2,
		`sknock_knock_packets_total`:                             flood + 2,
		`sknock_gate_verdicts_total{verdict="accept"}`:           1,
		`sknock_gate_packets_total`:                              1,
		`sknock_grants`:                                          1,
		`sknock_replay_cache_entries`:                            1,
		`sknock_connections_recorded`:                            1,
		`sknock_connections_full_total`:                          0,
		`sknock_rules_healthy`:                                   1,
		`sknock_crl_revoked_serials`:                             0,
	} {
		if got := metrictest.Value(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, name := range []string{"sknock_crl_age_seconds", "sknock_crl_next_update_seconds", `sknock_knock_decision_seconds_bucket{le="+Inf"}`, "sknock_build_info{", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, name) {
			t.Errorf("the scrape has no %s", name)
		}
	}
	metrictest.PromtoolCheck(t, body)
}

// TestMetricsConfig checks metrics.listen and control.socket: both
// restart-only, bad values refused naming the key.
// TestDecideGateAllocatesNothingWithMetrics: the gate's per-packet path
// stays free of allocations with the metrics registered and scraped
// between packets. (Not during: testing.AllocsPerRun counts every
// goroutine's allocations, a concurrent scrape's too.)
func TestDecideGateAllocatesNothingWithMetrics(t *testing.T) {
	d := &daemon{ops: newOpsStats()}
	d.engine = gate.NewEngine(gate.Config{Policy: gate.PolicyDrop}, nil)
	d.decisions = newDecisionLog(newLoggerAt(logLevel("error"), io.Discard), decisionLogPerSecond)
	src := netip.MustParseAddr("198.18.0.2")
	if err := d.engine.Grants().Add(gate.Grant{Source: src, Proto: packet.TCP, Port: 2000}, gate.CertID{}, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	reg, err := newMetricsRegistry(d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var h packet.Header
	h.Decode(packettest.TCPPacket(src, 40000, netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn))
	for range 3 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
		if allocs := testing.AllocsPerRun(1000, func() { d.decideGate(&h) }); allocs != 0 {
			t.Fatalf("decideGate allocates %v times per packet with metrics on, want 0", allocs)
		}
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "sknock_gate_verdicts_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "accept" && m.GetCounter().GetValue() < 3000 {
					t.Errorf("sknock_gate_verdicts_total{verdict=accept} = %v, want the 3000+ packets decided", m.GetCounter().GetValue())
				}
			}
		}
	}
}

// TestControlSocket drives the control socket of a daemon over fakes:
// the grant a knock made is listed with its certificate, revoke by
// source, serial and all end grants (and the gate refuses the source
// again), status answers, and a caller that is not root is refused.
func TestControlSocket(t *testing.T) {
	dir, cfg := daemonPKI(t)
	cfg.ControlSocket = filepath.Join(t.TempDir(), "run", "control.sock")
	f := newFakeOS()
	var peer atomic.Uint32 // the uid the fake SO_PEERCRED reports
	marker := &flowRecorder{}
	d, _ := runOperatorDaemon(t, &cfg, f, func(deps *OSDeps) {
		deps.ListenControl = control.Listen
		deps.PeerUID = func(*net.UnixConn) (uint32, error) { return peer.Load(), nil }
		deps.Marker = marker
	})
	if fi, err := os.Stat(cfg.ControlSocket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, mode %v; want 0600", err, fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Dir(cfg.ControlSocket)); fi.Mode().Perm() != 0o700 {
		t.Errorf("control socket's directory mode %v, want 0700", fi.Mode().Perm())
	}
	call := func(req control.Request) control.Response {
		t.Helper()
		resp, err := control.Call(cfg.ControlSocket, req, 5*time.Second)
		if err != nil {
			t.Fatalf("%+v: %v", req, err)
		}
		return resp
	}
	alice := testpki.Load(t, dir, nil).Issued(t, "alice")
	knockFrom := func(ip string) {
		t.Helper()
		injectKnock(t, f, ip, sealFor(t, dir, "alice", 2000, ip))
		if k := d.knocks.next(t, "knock"); !k.dec.Granted() {
			t.Fatalf("knock from %s: %v", ip, k.dec.Err)
		}
	}
	knockFrom("198.18.0.2")
	knockFrom("198.18.0.3")

	resp := call(control.Request{Command: control.CommandGrants})
	if resp.Live != 2 || len(resp.Grants) != 2 {
		t.Fatalf("grants: %+v, want 2", resp)
	}
	g := resp.Grants[0]
	if g.Proto != "tcp" || g.Port != 2000 || g.Serial != alice.Cert.SerialNumber.String() || !strings.Contains(g.Subject, "alice") || g.SecondsLeft <= 0 || g.SecondsLeft > 15 {
		t.Errorf("grant listed as %+v; want tcp/2000 by alice's certificate (serial %s) with up to 15 s left", g, alice.Cert.SerialNumber)
	}

	if v := synVerdict(t, f, "198.18.0.2"); !grantVerdict(v) { // a connection, recorded
		t.Fatalf("SYN from the granted source: %+v, want a grant", v)
	}
	resp = call(control.Request{Command: control.CommandRevoke, Source: "198.18.0.2"})
	if len(resp.Grants) != 1 || resp.Grants[0].Source != "198.18.0.2" || resp.Connections != 1 {
		t.Fatalf("revoke by source: %+v, want 198.18.0.2's grant and its connection ended", resp)
	}
	if got := marker.ended(); len(got) != 1 || got[0].Src.Addr() != netip.MustParseAddr("198.18.0.2") || got[0].Dst != netip.MustParseAddrPort("198.18.0.1:2000") {
		t.Errorf("connections ended: %v, want the one from 198.18.0.2 to 198.18.0.1:2000", got)
	}
	if v := synVerdict(t, f, "198.18.0.2"); !refuseVerdict(v) {
		t.Errorf("SYN from the revoked source: %+v, want reject", v)
	}
	if v := synVerdict(t, f, "198.18.0.3"); !grantVerdict(v) {
		t.Errorf("SYN from the other source: %+v, want a grant", v)
	}
	resp = call(control.Request{Command: control.CommandRevoke, Serial: "0x" + alice.Cert.SerialNumber.Text(16)})
	if len(resp.Grants) != 1 || resp.Grants[0].Source != "198.18.0.3" {
		t.Fatalf("revoke by serial: %+v, want 198.18.0.3's grant ended", resp)
	}
	knockFrom("198.18.0.4")
	if resp = call(control.Request{Command: control.CommandRevoke, All: true}); len(resp.Grants) != 1 {
		t.Fatalf("revoke all: %+v, want one grant ended", resp)
	}
	if resp = call(control.Request{Command: control.CommandGrants}); resp.Live != 0 {
		t.Errorf("grants after revoke all: %+v", resp)
	}
	if _, err := control.Call(cfg.ControlSocket, control.Request{Command: control.CommandRevoke, Source: "nowhere"}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "not an IP address") {
		t.Errorf("revoke by a bad source: %v, want a refusal naming it", err)
	}
	if _, err := control.Call(cfg.ControlSocket, control.Request{Command: control.CommandRevoke}, 5*time.Second); err == nil {
		t.Error("revoke with nothing selected was accepted")
	}

	st := call(control.Request{Command: control.CommandStatus}).Status
	if st == nil || st.Config != cfg.Path || !st.RulesHealthy || !st.Trust.CRL || st.Counters["knocks_granted"] != 3 || st.Version != testVersion {
		t.Errorf("status: %+v, want config %s, rules whole, a CRL and 3 granted knocks", st, cfg.Path)
	}
	if st != nil && (!strings.Contains(st.Trust.Server, "server") || len(st.Trust.CAs) != 1 || len(st.Trust.CRLs) != 1 || st.Trust.CRLs[0].File != cfg.CRLFile) {
		t.Errorf("status trust: %+v, want the server, one CA and the CRL %s", st.Trust, cfg.CRLFile)
	}

	peer.Store(1000)
	if _, err := control.Call(cfg.ControlSocket, control.Request{Command: control.CommandGrants}, 5*time.Second); err == nil || !strings.Contains(err.Error(), "only root") {
		t.Errorf("a caller with uid 1000: %v, want refused", err)
	}
	d.stop()
	if _, err := os.Stat(cfg.ControlSocket); !os.IsNotExist(err) {
		t.Errorf("control socket left after the stop: %v", err)
	}
}

// TestParseSerial reads serials as sknock pki and openssl print them.
func TestParseSerial(t *testing.T) {
	for give, want := range map[string]string{"4242": "4242", "0x10": "16", "0X0a:0b": "2571"} {
		n, err := parseSerial(give)
		if err != nil || n.String() != want {
			t.Errorf("parseSerial(%q) = %v, %v; want %s", give, n, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "0", "zz", "0x"} {
		if _, err := parseSerial(bad); err == nil {
			t.Errorf("parseSerial(%q) accepted", bad)
		}
	}
}

// flowRecorder records the connections it was asked to end, and says it
// ended each.
type flowRecorder struct {
	mu  sync.Mutex
	got []gate.Conn
}

func (m *flowRecorder) EndConns(ended []gate.Conn) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, ended...)
	return len(ended), nil
}

func (m *flowRecorder) ended() []gate.Conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]gate.Conn(nil), m.got...)
}

// notifications records sd_notify messages in order.
type notifications struct {
	reports[string]
	onSend func(string)
}

func (n *notifications) send(state string) error {
	if n.onSend != nil {
		n.onSend(state)
	}
	n.add(state)
	return nil
}

// TestNotifyReadyAfterRulesAndReload acts as systemd: READY=1 comes only
// once the rules are applied and the queues bound, a reload sends
// RELOADING=1 (with MONOTONIC_USEC) and then READY=1, a refused reload
// too, and a stop sends STOPPING=1.
func TestNotifyReadyAfterRulesAndReload(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	n := &notifications{}
	var readyBeforeRules atomic.Bool
	n.onSend = func(state string) {
		if strings.HasPrefix(state, "READY=1") {
			if applied, _ := f.counts(); applied == 0 || len(f.gateSock.Configs()) == 0 || len(f.knockSock.Configs()) == 0 {
				readyBeforeRules.Store(true)
			}
		}
	}
	d, _ := runOperatorDaemon(t, &cfg, f, func(deps *OSDeps) { deps.Notify = n.send })
	if got := n.next(t, "notification"); !strings.HasPrefix(got, "READY=1\nSTATUS=serving") {
		t.Fatalf("first notification %q, want READY=1 with a STATUS", got)
	}
	if readyBeforeRules.Load() {
		t.Fatal("READY=1 was sent before the rules were applied and both queues bound")
	}
	d.hup <- os.Interrupt
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatal(err)
	}
	if got := n.next(t, "notification"); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[1-9][0-9]*\nSTATUS=reloading `).MatchString(got) {
		t.Errorf("reload's first notification %q, want RELOADING=1 with MONOTONIC_USEC", got)
	}
	if got := n.next(t, "notification"); !strings.HasPrefix(got, "READY=1\nSTATUS=serving; configuration reloaded") {
		t.Errorf("reload's second notification %q, want READY=1", got)
	}
	rewriteConfig(t, cfg.Path, "policy: reject", "policy: sometimes")
	d.hup <- os.Interrupt
	if err := d.reloads.next(t, "reload"); err == nil {
		t.Fatal("a bad config was reloaded")
	}
	n.next(t, "notification") // RELOADING=1
	if got := n.next(t, "notification"); !strings.HasPrefix(got, "READY=1\nSTATUS=serving; reload refused") {
		t.Errorf("refused reload's second notification %q, want READY=1 saying it was refused", got)
	}
	d.stop()
	if got := n.next(t, "notification"); got != "STOPPING=1" {
		t.Errorf("notification at the stop %q, want STOPPING=1", got)
	}
}

// kernelQueue fakes a gate queue's kernel counters: ids counts the
// packets the kernel handed to the socket.
type kernelQueue struct{ ids atomic.Uint32 }

func (k *kernelQueue) stats(q uint16) (queue.KernelStats, error) {
	return queue.KernelStats{Queue: q, IDSequence: k.ids.Load()}, nil
}

// wedgeSocket is a gate socket whose verdicts block while wedged.
type wedgeSocket struct {
	queue.Socket
	wedged  atomic.Bool
	release chan struct{}
}

func (w *wedgeSocket) block() {
	if w.wedged.Load() {
		<-w.release
	}
}

func (w *wedgeSocket) SetVerdict(id uint32, v int) error {
	w.block()
	return w.Socket.SetVerdict(id, v)
}

func (w *wedgeSocket) SetVerdictWithMark(id uint32, v int, mark uint32) error {
	w.block()
	return w.Socket.SetVerdictWithMark(id, v, mark)
}

func (w *wedgeSocket) SetVerdictBatch(id uint32, v int, mark uint32, withMark bool) error {
	w.block()
	return w.Socket.SetVerdictBatch(id, v, mark, withMark)
}

// TestWatchdogIdleAndWedged: an idle gate (its reader waiting in a
// receive) keeps WATCHDOG=1 coming for many watchdog intervals; a gate
// stuck in a verdict send stops it once the kernel hands it a packet it
// does not take.
func TestWatchdogIdleAndWedged(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	kq := &kernelQueue{}
	ws := &wedgeSocket{release: make(chan struct{})}
	n := &notifications{}
	const every = 20 * time.Millisecond
	d, ops := runOperatorDaemon(t, &cfg, f, func(deps *OSDeps) {
		deps.Notify = n.send
		deps.WatchdogEvery = func() time.Duration { return every }
		deps.KernelStats = kq.stats
		open := deps.Open
		deps.Open = func(sc queue.SocketConfig) (queue.Socket, error) {
			s, err := open(sc)
			if sc.Queue == 101 && err == nil {
				ws.Socket = s
				return ws, nil
			}
			return s, err
		}
	})
	defer close(ws.release)
	// Idle: no packet for 10 watchdog intervals; every check passes.
	for i := range 20 {
		if err := ops.watchdog.next(t, "watchdog check"); err != nil {
			t.Fatalf("idle gate, check %d: %v", i, err)
		}
	}
	// Working: packets answered between checks keep it coming.
	for range 3 {
		kq.ids.Add(1)
		if v := synVerdict(t, f, "198.18.0.9"); !refuseVerdict(v) {
			t.Fatalf("SYN: %+v", v)
		}
		ops.watchdog.next(t, "watchdog check")
		if err := ops.watchdog.next(t, "watchdog check"); err != nil {
			t.Fatalf("working gate: %v", err)
		}
	}
	watchdogs := func() int {
		n.mu.Lock()
		defer n.mu.Unlock()
		c := 0
		for _, s := range n.got {
			if strings.HasPrefix(s, "WATCHDOG=1") {
				c++
			}
		}
		return c
	}
	if watchdogs() < 20 {
		t.Fatalf("%d WATCHDOG=1 sent, want one per passed check", watchdogs())
	}

	// Wedged: the reader takes one packet and blocks in its verdict; the
	// kernel hands it two more, which it never takes.
	ws.wedged.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kq.ids.Add(1)
	go f.gateSock.Inject(ctx, packettest.TCPPacket(netip.MustParseAddr("198.18.0.9"), 40000, netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn))
	kq.ids.Add(2)
	var failed error
	for range 50 {
		if failed = ops.watchdog.next(t, "watchdog check"); failed != nil {
			break
		}
	}
	if failed == nil || !strings.Contains(failed.Error(), "gate queue 101") {
		t.Fatalf("wedged gate: checks went on passing (last: %v)", failed)
	}
	sent := watchdogs()
	for range 5 {
		if err := ops.watchdog.next(t, "watchdog check"); err == nil {
			t.Fatal("a check passed again while the gate is wedged")
		}
	}
	if watchdogs() != sent {
		t.Errorf("WATCHDOG=1 went on while the gate was wedged (%d, then %d)", sent, watchdogs())
	}
	if !strings.Contains(d.logs.String(), "gate not answering") {
		t.Error("the wedge was not logged")
	}
	ws.wedged.Store(false)
}

// TestMetricsListenTakenFailsStart: a metrics.listen address that cannot
// be bound stops the start, naming the key, before any rule is applied.
func TestMetricsListenTakenFailsStart(t *testing.T) {
	_, cfg := daemonPKI(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg.MetricsListen = taken.Addr().String()
	f := newFakeOS()
	var stderr testenv.SyncBuffer
	if code := Serve(context.Background(), &cfg, nil, &stderr, f.deps()); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "metrics.listen "+cfg.MetricsListen) {
		t.Errorf("stderr %q does not name metrics.listen and the address", stderr.String())
	}
	if applied, _ := f.counts(); applied != 0 {
		t.Errorf("rules applied %d times, want none", applied)
	}
}

// BenchmarkDecideGate is the gate's per-packet decision (a granted SYN)
// without metrics and with a scraper gathering them as fast as it can;
// the two should cost the same (the scrape reads, the packet path is
// unchanged). Run both in one invocation and compare. The scraped run's
// B/op are the scraper's own allocations (the count is process-wide);
// TestDecideGateAllocatesNothingWithMetrics holds the path at zero.
func BenchmarkDecideGate(b *testing.B) {
	for _, scraped := range []bool{false, true} {
		b.Run(map[bool]string{false: "metrics-off", true: "scraped"}[scraped], func(b *testing.B) {
			d := &daemon{ops: newOpsStats()}
			d.engine = gate.NewEngine(gate.Config{Policy: gate.PolicyDrop}, nil)
			d.decisions = newDecisionLog(newLoggerAt(logLevel("error"), io.Discard), decisionLogPerSecond)
			src := netip.MustParseAddr("198.18.0.2")
			if err := d.engine.Grants().Add(gate.Grant{Source: src, Proto: packet.TCP, Port: 2000}, gate.CertID{}, time.Now().Add(time.Hour)); err != nil {
				b.Fatal(err)
			}
			if scraped {
				reg, err := newMetricsRegistry(d, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					for {
						select {
						case <-stop:
							return
						default:
							reg.Gather()
						}
					}
				}()
			}
			var h packet.Header
			h.Decode(packettest.TCPPacket(src, 40000, netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn))
			b.ReportAllocs()
			for b.Loop() {
				d.decideGate(&h)
			}
		})
	}
}

// TestMetricsShowTrustWarnings: without a CRL the metrics say so
// (sknock_trust_warnings{check="no_crl"} 1), every other check shows 0,
// and with a CRL no_crl is 0.
func TestMetricsShowTrustWarnings(t *testing.T) {
	for _, withCRL := range []bool{false, true} {
		_, cfg := daemonPKI(t)
		if !withCRL {
			cfg.CRLFile = ""
		}
		cfg.MetricsListen = "127.0.0.1:0"
		_, ops := runOperatorDaemon(t, &cfg, newFakeOS(), nil)
		body := scrape(t, ops.metrics.next(t, "metrics listener"))
		want := 0.0
		if !withCRL {
			want = 1
		}
		if got := metrictest.Value(body, `sknock_trust_warnings{check="no_crl"}`); got != want {
			t.Errorf("with CRL %v: no_crl = %v, want %v", withCRL, got, want)
		}
		if got := metrictest.Value(body, `sknock_trust_warnings{check="crl_stale"}`); got != 0 {
			t.Errorf("with CRL %v: crl_stale = %v, want 0", withCRL, got)
		}
	}
}

// TestControlReload: a reload over the control socket answers with the
// changed keys, or with the same error the log has (and changes
// nothing); status shows the last one.
func TestControlReload(t *testing.T) {
	dir, cfg := daemonPKI(t)
	cfg.ControlSocket = filepath.Join(t.TempDir(), "run", "control.sock")
	f := newFakeOS()
	d, _ := runOperatorDaemon(t, &cfg, f, func(deps *OSDeps) {
		deps.ListenControl = control.Listen
		deps.PeerUID = func(*net.UnixConn) (uint32, error) { return 0, nil }
	})
	path := filepath.Join(dir, "config.yaml")
	// The file names the socket in force, or a reload is refused as a
	// restart-only change.
	file, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(file, "control:\n  socket: %s\n", cfg.ControlSocket)
		file.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	reload := func() (control.Response, error) {
		t.Helper()
		return control.Call(cfg.ControlSocket, control.Request{Command: control.CommandReload}, control.ReloadTimeout)
	}

	rewriteConfig(t, path, "policy: reject", "policy: drop")
	resp, err := reload()
	if err != nil || resp.Reload == nil || !slices.Equal(resp.Reload.Changed, []string{"gate.policy"}) || resp.Reload.Trigger != "sknock reload" {
		t.Fatalf("reload: %+v, %v; want gate.policy changed", resp.Reload, err)
	}
	d.reloads.next(t, "reload")

	rewriteConfig(t, path, "policy: drop", "policy: sometimes")
	resp, err = reload()
	if !errors.Is(err, control.ErrRefused) || !strings.Contains(err.Error(), "gate.policy") || resp.Reload == nil || resp.Reload.Error == "" {
		t.Fatalf("reload of a bad file: %+v, %v; want refused, naming gate.policy", resp.Reload, err)
	}
	d.reloads.next(t, "reload")
	logged := logLines(d.logs, "reload refused")
	if len(logged) != 1 || !strings.Contains(logged[0], jsonEscape(resp.Reload.Error)) {
		t.Errorf("the log's refusal %q does not carry the answer's error %q", logged, resp.Reload.Error)
	}
	st, err := control.Call(cfg.ControlSocket, control.Request{Command: control.CommandStatus}, 5*time.Second)
	if err != nil || st.Status.LastReload == nil || st.Status.LastReload.Error != resp.Reload.Error {
		t.Errorf("status after a refused reload: %+v, %v; want that refusal as the last reload", st.Status, err)
	}
}

// jsonEscape is s as it appears inside a JSON string.
func jsonEscape(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
