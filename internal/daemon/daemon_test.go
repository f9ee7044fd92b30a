package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/crlfetch"
	"sknock/internal/testenv"
	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
	"sknock/rules"
	"sknock/rules/rulestest"
)

// reports collects, in order, what one of the daemon's hooks reports,
// and lets a test wait for the next one. Adding never blocks the daemon.
// The zero value is ready to use.
type reports[T any] struct {
	mu    sync.Mutex
	got   []T
	seen  int           // how many next returned
	added chan struct{} // closed at the next add; nil until a waiter asks
}

func (r *reports[T]) add(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, v)
	if r.added != nil {
		close(r.added)
		r.added = nil
	}
}

// next returns the first report the test has not seen yet, waiting for
// it. The timeout only ends a test that would otherwise hang.
func (r *reports[T]) next(t *testing.T, what string) T {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		r.mu.Lock()
		if r.seen < len(r.got) {
			v := r.got[r.seen]
			r.seen++
			r.mu.Unlock()
			return v
		}
		if r.added == nil {
			r.added = make(chan struct{})
		}
		added := r.added
		r.mu.Unlock()
		select {
		case <-added:
		case <-timeout.C:
			t.Fatalf("no %s reported", what)
		}
	}
}

// knockReport is one call of the knockDecided hook.
type knockReport struct {
	src netip.Addr
	dec gate.Decision
}

// daemonReports are what the daemon's hooks reported.
type daemonReports struct {
	started reports[struct{}]
	knocks  reports[knockReport]
	reloads reports[error]
	repairs reports[[]rules.Finding]
	crls    reports[crlRefresh]
	health  reports[[]healthWarning]
}

func (r *daemonReports) hooks() Hooks {
	return Hooks{
		Started:      func() { r.started.add(struct{}{}) },
		KnockDecided: func(src netip.Addr, dec gate.Decision) { r.knocks.add(knockReport{src, dec}) },
		Reloaded:     r.reloads.add,
		Repaired:     r.repairs.add,
		CRLRefreshed: r.crls.add,
		HealthLogged: r.health.add,
	}
}

// testVersion is the version the daemons of the tests report.
const testVersion = "0.0.0-test"

// fakeOS is every OS boundary of the daemon, faked.
type fakeOS struct {
	gateSock, gateSock2 *queuetest.Socket // queues 101 and 102
	knockSock           *queuetest.Socket // queue 100
	holdSock            *queuetest.Socket // any other queue
	v4, v6              *rulestest.Table  // the kernel's filter tables
	keeper              *rules.Keeper     // over v4 and v6
	mu                  sync.Mutex
	applied, removed    int
	locks               int
	applyErr, openErr   error
	lockErr             error
	// edit, when set, changes the deps (a CRL fetcher, the clock).
	edit func(*OSDeps)
}

func newFakeOS() *fakeOS {
	f := &fakeOS{gateSock: queuetest.New(), gateSock2: queuetest.New(), knockSock: queuetest.New(), holdSock: queuetest.New()}
	f.v4, f.v6 = rulestest.New(), rulestest.New()
	f.keeper = rules.NewKeeper(f.v4, f.v6)
	return f
}

// countingKeeper counts Apply calls and fails them with fakeOS.applyErr.
type countingKeeper struct{ f *fakeOS }

func (k countingKeeper) Apply(c rules.Config) error {
	k.f.mu.Lock()
	k.f.applied++
	err := k.f.applyErr
	k.f.mu.Unlock()
	if err != nil {
		return err
	}
	return k.f.keeper.Apply(c)
}

func (k countingKeeper) Repair() []rules.Finding { return k.f.keeper.Repair() }

func (k countingKeeper) Refit() (bool, bool, error) { return k.f.keeper.Refit() }

func (f *fakeOS) deps() OSDeps {
	deps := f.baseDeps()
	if f.edit != nil {
		f.edit(&deps)
	}
	return deps
}

func (f *fakeOS) baseDeps() OSDeps {
	return OSDeps{
		Version: testVersion,
		Open: func(sc queue.SocketConfig) (queue.Socket, error) {
			if f.openErr != nil {
				return nil, f.openErr
			}
			switch sc.Queue {
			case 100:
				return f.knockSock.Open(sc)
			case 101:
				return f.gateSock.Open(sc)
			case 102:
				return f.gateSock2.Open(sc)
			}
			return f.holdSock.Open(sc)
		},
		Keeper: func() (RuleKeeper, error) { return countingKeeper{f}, nil },
		RemoveRules: func(c rules.Config) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.removed++
			return errors.Join(rules.Remove(f.v4, c, false), rules.Remove(f.v6, c, true))
		},
		Fetch: func(context.Context, string, crlfetch.Validators) (crlfetch.Result, error) {
			return crlfetch.Result{}, errors.New("no network in tests")
		},
		Lock: func() (io.Closer, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.lockErr != nil {
				return nil, f.lockErr
			}
			f.locks++
			return io.NopCloser(nil), nil
		},
		WatchEvery: 10 * time.Millisecond,
	}
}

// counts returns how often the rules were applied and removed.
func (f *fakeOS) counts() (applied, removed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, f.removed
}

// daemonPKI makes a CA (testpki's defaults: server.pfx, password "pw"),
// client alice (tcp/2000) and an empty CRL, and a config for them in
// DIR/config.yaml.
func daemonPKI(t *testing.T) (dir string, cfg config.Config) {
	t.Helper()
	p := testpki.New(t, &testpki.Options{Clients: map[string]string{"alice": "tcp/2000"}})
	p.WriteCRL(t)
	// The replay file lives in the test's directory (in a directory the
	// daemon makes), never in the host's /var/lib/sknock, where one
	// test's knocks would fill the next's replay memory.
	yaml := fmt.Sprintf("server:\n  pkcs12: %s\n  password_file: %s\ncrl:\n  file: %s\ngate:\n  protect: [tcp/2000]\n  policy: reject\n  hold_queue: 110\nknock:\n  replay_file: %s\n",
		p.ServerPKCS12, p.PasswordFile, p.CRLFile(), filepath.Join(p.Dir, "state", "replay"))
	path := filepath.Join(p.Dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return p.Dir, cfg
}

// sealFor returns a knock from client of daemonPKI's CA in dir for
// tcp/port from ip, signed now.
func sealFor(t *testing.T, dir, client string, port uint16, ip string) []byte {
	t.Helper()
	return testpki.Load(t, dir, nil).Seal(t, client, packet.TCP, port, netip.MustParseAddr(ip), time.Now())
}

// testDaemon is Serve running over a fakeOS.
type testDaemon struct {
	// logs is what the daemon logged; it is complete once stop returned
	// (Serve flushes its asynchronous log writer before it returns).
	logs *testenv.SyncBuffer
	hup  chan<- os.Signal
	*daemonReports
	// stop cancels the daemon, waits for it and returns its exit status
	// (-1 if it did not stop); later calls return the same.
	stop func() int
}

// runDaemon starts Serve over f and returns once the daemon serves;
// changes, if any, edit its deps last (after the test hooks are set).
// The test's cleanup stops it.
func runDaemon(t *testing.T, cfg *config.Config, f *fakeOS, changes ...func(*OSDeps)) *testDaemon {
	t.Helper()
	d := &testDaemon{logs: &testenv.SyncBuffer{}, daemonReports: &daemonReports{}}
	deps := f.deps()
	deps.Hooks = d.hooks()
	for _, change := range changes {
		change(&deps)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	d.hup = hup
	done := make(chan int, 1)
	go func() { done <- Serve(ctx, cfg, hup, d.logs, deps) }()
	var once sync.Once
	code := -1
	d.stop = func() int {
		once.Do(func() {
			cancel()
			select {
			case code = <-done:
			case <-time.After(10 * time.Second): // only ends a test that would hang
				t.Error("daemon did not stop")
			}
		})
		return code
	}
	t.Cleanup(func() { d.stop() })
	d.started.next(t, "start")
	return d
}

// logLines returns the lines of logs that contain substr.
func logLines(logs *testenv.SyncBuffer, substr string) []string {
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, substr) {
			lines = append(lines, l)
		}
	}
	return lines
}

// synVerdict injects a SYN from src to port 2000 into gate queue 101 and
// returns the verdict.
func synVerdict(t *testing.T, f *fakeOS, src string) queuetest.Verdict {
	t.Helper()
	return synVerdictOn(t, f.gateSock, src)
}

// synPort makes each SYN of synVerdictOn a new one: the same bytes again
// at once would be taken for a packet looping back after its repeat.
var synPort atomic.Uint32

// grantVerdict reports whether v grants: a repeat with the grant bit.
func grantVerdict(v queuetest.Verdict) bool {
	return v.Verdict == queue.NFRepeat && v.WithMark && v.Mark&queue.DefaultAcceptMark != 0
}

// refuseVerdict reports whether v refuses: a repeat with the reject bit.
func refuseVerdict(v queuetest.Verdict) bool {
	return v.Verdict == queue.NFRepeat && v.WithMark && v.Mark&queue.DefaultRejectMark != 0
}

// synVerdictOn injects a SYN from src to port 2000 into sock and returns
// the verdict.
func synVerdictOn(t *testing.T, sock *queuetest.Socket, src string) queuetest.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := packettest.TCPPacket(netip.MustParseAddr(src), uint16(40000+synPort.Add(1)%20000), netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn)
	id, err := sock.Inject(ctx, pkt)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := sock.Settled(id)
	if !ok {
		t.Fatalf("no verdict for packet %d", id)
	}
	return v
}

func injectKnock(t *testing.T, f *fakeOS, src string, datagram []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := packettest.UDPPacket(netip.MustParseAddr(src), 40001, netip.MustParseAddr("198.18.0.1"), 23456, datagram)
	if _, err := f.knockSock.Inject(ctx, pkt); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonWiring drives the whole daemon through its fake OS
// boundaries: rules applied once, a SYN rejected, a knock granted, the
// SYN accepted, counters on SIGUSR1, a revocation picked up by SIGHUP
// that ends the revoked certificate's live grant (logged with its
// serial), and the rules kept on stop.
func TestDaemonWiring(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	alice := netip.MustParseAddr("198.18.0.2")

	if v := synVerdict(t, f, "198.18.0.2"); v.Verdict != queue.NFRepeat || v.Mark&cfg.Rules.Mark == 0 {
		t.Fatalf("SYN before the knock: %+v, want a repeat with the reject mark", v)
	}
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	if k := d.knocks.next(t, "knock decision"); k.src != alice || !k.dec.Granted() {
		t.Fatalf("knock from %v: %s (%v), want a grant to %v", k.src, k.dec.Verdict(), k.dec.Err, alice)
	}
	if v := synVerdict(t, f, "198.18.0.2"); !grantVerdict(v) {
		t.Fatalf("SYN after the knock: %+v, want a grant", v)
	}
	if v := synVerdict(t, f, "198.18.0.3"); !refuseVerdict(v) {
		t.Fatalf("SYN from another source: %+v, want reject", v)
	}

	d.hup <- syscall.SIGUSR1 // handled before the SIGHUP below: one loop reads both
	testpki.Load(t, dir, nil).Revoke(t, "alice")
	d.hup <- os.Interrupt // any value: the channel stands for SIGHUP
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatalf("reload refused: %v", err)
	}
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	if k := d.knocks.next(t, "knock decision"); k.dec.Reason != gate.ReasonRevoked {
		t.Fatalf("knock after the revocation: %s (%v), want %s", k.dec.Verdict(), k.dec.Reason, gate.ReasonRevoked)
	}
	// The revocation ended alice's live grant at once.
	if v := synVerdict(t, f, "198.18.0.2"); !refuseVerdict(v) {
		t.Fatalf("SYN after alice's certificate was revoked: %+v, want reject", v)
	}

	if code := d.stop(); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, d.logs.String())
	}
	if applied, removed := f.counts(); applied != 1 || removed != 0 {
		t.Errorf("rules applied %d and removed %d times, want 1 and 0 (a stop keeps them)", applied, removed)
	}
	if !strings.Contains(f.v4.Rules("INPUT")[0], "SKNOCK") || len(f.v6.Rules("SKNOCK")) == 0 {
		t.Errorf("rules gone after the stop: INPUT %q", f.v4.Rules("INPUT"))
	}
	if pre := f.v4.TableRules("mangle", "PREROUTING"); len(pre) == 0 || !strings.Contains(pre[0], "SKNOCK") || len(f.v6.TableRules("mangle", "SKNOCK")) == 0 {
		t.Errorf("gate gone after the stop: mangle PREROUTING %q", pre)
	}
	logs := d.logs.String()
	for _, want := range []string{`"verdict":"grant"`, `"reason":"revoked"`, `"msg":"sknockd stopped","status":0,"rules":"kept"`, `"msg":"grant ended","source":"198.18.0.2","proto":"tcp","port":2000,"serial":`} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s in the log:\n%s", want, logs)
		}
	}
	counters, reloaded := strings.Index(logs, `"msg":"counters"`), strings.Index(logs, "trust reloaded (SIGHUP)")
	if counters < 0 || reloaded < 0 || counters > reloaded {
		t.Errorf("want a counters line (SIGUSR1) before \"trust reloaded (SIGHUP)\" in the log:\n%s", logs)
	}
}

func TestDaemonFailuresApplyNothingOrKeepRules(t *testing.T) {
	_, cfg := daemonPKI(t)
	tests := []struct {
		name        string
		openErr     error
		applyErr    error
		wantApplied int
	}{
		{"queue cannot bind: no rules", errors.New("bind: operation not permitted"), nil, 0},
		{"rules fail: exit", nil, errors.New("iptables: boom"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeOS()
			f.openErr, f.applyErr = tt.openErr, tt.applyErr
			var logs testenv.SyncBuffer
			code := Serve(context.Background(), &cfg, nil, &logs, f.deps())
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if f.applied != tt.wantApplied || f.removed != 0 {
				t.Errorf("applied %d removed %d, want %d and 0", f.applied, f.removed, tt.wantApplied)
			}
		})
	}
}

// TestDaemonTwoGateQueues runs the daemon with gate.queues: 2: both gate
// queues are bound, both decide with the
// one engine (a grant heard on the knock queue opens the port on either),
// a batch on either gets one batch verdict, and the counters are summed.
func TestDaemonTwoGateQueues(t *testing.T) {
	dir, cfg := daemonPKI(t)
	cfg.Rules.GateQueues = 2
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)

	for i, sock := range []*queuetest.Socket{f.gateSock, f.gateSock2} {
		if got := sock.Configs(); len(got) != 1 || got[0].Queue != uint16(101+i) {
			t.Errorf("gate socket %d opened with %+v, want queue %d", i, got, 101+i)
		}
		if v := synVerdictOn(t, sock, "198.18.0.2"); !refuseVerdict(v) {
			t.Errorf("queue %d, SYN before the knock: %+v, want reject", 101+i, v)
		}
	}
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	if k := d.knocks.next(t, "knock decision"); !k.dec.Granted() {
		t.Fatalf("knock: %s (%v), want a grant", k.dec.Verdict(), k.dec.Err)
	}
	syn := func(port uint16) []byte {
		return packettest.TCPPacket(netip.MustParseAddr("198.18.0.2"), port, netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn)
	}
	for i, sock := range []*queuetest.Socket{f.gateSock, f.gateSock2} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		base := uint16(30000 + 10*i)
		ids, err := sock.InjectData(ctx, syn(base), syn(base+1), syn(base+2))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		want := queuetest.Verdict{ID: ids[2], Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true, Batch: true}
		if diff := cmp.Diff([]queuetest.Verdict{want}, sock.Verdicts()[1:]); diff != "" {
			t.Errorf("queue %d, SYNs after the knock (-want +got):\n%s", 101+i, diff)
		}
	}

	if code := d.stop(); code != 0 {
		t.Fatalf("exit %d, want 0\n%s", code, d.logs.String())
	}
	if !strings.Contains(d.logs.String(), `"gate_packets":8`) {
		t.Errorf("counters do not sum both gate queues (want gate_packets 8):\n%s", d.logs.String())
	}
}

// brokenSocket binds, then fails for good as soon as it is served.
type brokenSocket struct{}

func (brokenSocket) Serve(context.Context, func([]queue.Packet), func(error)) error {
	return errors.New("socket broke")
}
func (brokenSocket) SetVerdict(uint32, int) error                    { return nil }
func (brokenSocket) SetVerdictWithMark(uint32, int, uint32) error    { return nil }
func (brokenSocket) SetVerdictBatch(uint32, int, uint32, bool) error { return nil }
func (brokenSocket) Close() error                                    { return nil }

// TestDaemonBrokenReaderExitsPromptlyKeepingRules breaks the gate reader
// as soon as it serves: the daemon exits 1 with its rules in place, and
// promptly: the other readers stop at once, without waiting out their
// stop limit (which would log "slow to stop").
func TestDaemonBrokenReaderExitsPromptlyKeepingRules(t *testing.T) {
	_, cfg := daemonPKI(t)
	f := newFakeOS()
	deps := f.deps()
	knockOpen := deps.Open
	deps.Open = func(sc queue.SocketConfig) (queue.Socket, error) {
		if sc.Queue == cfg.Rules.GateQueue {
			return brokenSocket{}, nil
		}
		return knockOpen(sc)
	}
	var logs testenv.SyncBuffer
	done := make(chan int, 1)
	go func() { done <- Serve(context.Background(), &cfg, nil, &logs, deps) }()
	select {
	case code := <-done:
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second): // only ends a test that would hang
		t.Fatalf("no exit after a reader broke\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "slow to stop") {
		t.Errorf("spurious slow-stop warning:\n%s", logs.String())
	}
	if applied, removed := f.counts(); applied != 1 || removed != 0 {
		t.Errorf("applied %d removed %d, want the rules left in place (1, 0)", applied, removed)
	}
}
