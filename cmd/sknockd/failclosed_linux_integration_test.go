//go:build linux

package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/packet"
)

// The tests of this file show that sknock fails closed (issue 10): no
// restart, crash, reload, boot, rule tampering or second instance ever
// lets an ungranted source reach a protected port.

// extraPort is a TCP echo service that a reload adds to gate.protect.
const extraPort = 3500

// The daemon's log messages these tests wait for.
const (
	msgReloaded = "config reloaded"
	msgRefused  = "reload refused, keeping the current configuration"
	msgRestored = "rules restored"
	msgStopped  = "sknockd stopped"
)

// Time limits of the fail-closed checks. hideLimit and restoreLimit are
// the bounds the issue sets for a reload and for the rules watcher.
const (
	pollEvery    = 50 * time.Millisecond
	quickProbe   = 200 * time.Millisecond // an answer under reject comes at once
	hideLimit    = time.Second            // a SIGHUP that protects a port hides it
	restoreLimit = 2 * time.Second        // tampered rules are restored
	noDaemonFor  = 300 * time.Millisecond // how long the prober runs with no sknockd
)

// defaultProtect is the gate.protect of sections (and of liveConfig's zero
// value).
var defaultProtect = []string{"tcp/2000", "tcp/3000", "udp/8000", "udp/8001"}

// liveConfig is the knock and gate part of a config that the tests write,
// and rewrite while sknockd runs. Zero fields take the values of sections.
type liveConfig struct {
	policy     string   // gate.policy: drop or reject
	protect    []string // gate.protect; nil: defaultProtect
	rateLimit  string   // knock.rate_limit; "": 20/second
	chain      string   // gate.chain; "": SKNOCK
	knockQueue int      // knock.queue; 0: 100
	gateQueue  int      // gate.queue; 0: 101
}

// sections renders c as the YAML that follows the server and crl
// sections (see e2e.PKI.Config).
func (c liveConfig) sections() string {
	protect := c.protect
	if protect == nil {
		protect = defaultProtect
	}
	rate, chain, kq, gq := c.rateLimit, c.chain, c.knockQueue, c.gateQueue
	if rate == "" {
		rate = "20/second"
	}
	if chain == "" {
		chain = "SKNOCK"
	}
	if kq == 0 {
		kq = 100
	}
	if gq == 0 {
		gq = 101
	}
	return fmt.Sprintf(`knock:
  ports: "40000:40100"
  queue: %d
  rate_limit: %s
gate:
  queue: %d
  chain: %s
  protect: [%s]
  always_allow: [tcp/22]
  policy: %s
  open_duration: 1m
`, kq, rate, gq, chain, strings.Join(protect, ", "), c.policy)
}

// newServedEnv is newEnv without a daemon: the namespaces, the echo
// services (plus a TCP echo on each of extraTCP), the PKI and alice.
func newServedEnv(t *testing.T, extraTCP ...int) *env {
	t.Helper()
	e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t)}
	e.alice = e.pki.Client(t, "alice", "tcp/2000,tcp/3000,udp/8000,udp/8001")
	for _, p := range append([]int{sshPort, tcpA, tcpB}, extraTCP...) {
		e2e.ServeTCPEcho(t, e.net.Server, fmt.Sprintf(":%d", p))
	}
	for _, p := range []int{udpA, udpB} {
		e2e.ServeUDPEcho(t, e.net.Server, fmt.Sprintf(":%d", p))
	}
	return e
}

// startDaemon starts sknockd on c. t must be the test's top-level t: the
// daemon is stopped when it ends.
func (e *env) startDaemon(t *testing.T, c liveConfig) {
	t.Helper()
	e.policy = c.policy
	e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(c.sections()))
}

// hup writes config (a whole file) over the daemon's config file and sends
// SIGHUP. It returns the index of the daemon's next log line and when
// the signal went.
func (e *env) hup(t *testing.T, config string) (from int, sent time.Time) {
	t.Helper()
	writeIntegrationFile(t, e.daemon.Config, config)
	from = len(e.daemon.Lines())
	sent = time.Now()
	e.daemon.Signal(syscall.SIGHUP)
	return from, sent
}

// waitLine waits up to timeout for the daemon's first log line at index
// from or later for which match is true, and fails t (the caller's own,
// so a subtest fails alone) with the lines since from when none comes.
func (e *env) waitLine(t *testing.T, from int, timeout time.Duration, what string, match func(e2e.Line) bool) e2e.Line {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for range int(timeout/pollEvery) + 2 {
		lines := e.daemon.Lines()
		for _, l := range lines[min(from, len(lines)):] {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(pollEvery)
	}
	var since []string
	if lines := e.daemon.Lines(); from < len(lines) {
		for _, l := range lines[max(from, len(lines)-20):] {
			since = append(since, fmt.Sprint(l))
		}
	}
	t.Fatalf("no %s log line within %v; the last lines (at most 20) since:\n%s", what, timeout, strings.Join(since, "\n"))
	return nil
}

// reloadAnswer waits for the daemon's answer to a SIGHUP: the line saying
// the config was reloaded, or that it was refused.
func (e *env) reloadAnswer(t *testing.T, from int) e2e.Line {
	t.Helper()
	return e.waitLine(t, from, logTimeout, "reload answer", func(l e2e.Line) bool {
		return l.Msg() == msgReloaded || l.Msg() == msgRefused
	})
}

// reload applies c with a SIGHUP and fails t unless the daemon says it
// reloaded it, naming at least the keys wantChanged among the changed
// ones. On success the env's policy is c's.
func (e *env) reload(t *testing.T, c liveConfig, wantChanged ...string) e2e.Line {
	t.Helper()
	from, _ := e.hup(t, e.pki.Config(c.sections()))
	l := e.reloadAnswer(t, from)
	if l.Msg() != msgReloaded {
		t.Fatalf("SIGHUP with a good config: %v, want %q", l, msgReloaded)
	}
	e.policy = c.policy
	checkChanged(t, l, wantChanged...)
	return l
}

// checkChanged fails t unless the "changed" list of l names every key of
// want.
func checkChanged(t *testing.T, l e2e.Line, want ...string) {
	t.Helper()
	got := lineList(l, "changed")
	for _, key := range want {
		if !slices.Contains(got, key) {
			t.Errorf("reload line's changed = %q, want it to name %s; line: %v", got, key, l)
		}
	}
}

// lineList returns the field key of l as a list of strings: a JSON array,
// or a string of comma- or space-separated items.
func lineList(l e2e.Line, key string) []string {
	var out []string
	switch v := l[key].(type) {
	case []any:
		for _, item := range v {
			out = append(out, fmt.Sprint(item))
		}
	case string:
		out = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
	}
	return out
}

// within polls cond every pollEvery until it holds, and reports whether it
// held before limit had passed since start. It checks at least once.
func within(start time.Time, limit time.Duration, cond func() bool) bool {
	for range int(limit/pollEvery) + 2 {
		if cond() {
			return time.Since(start) <= limit
		}
		if time.Since(start) > limit {
			return false
		}
		time.Sleep(pollEvery)
	}
	return false
}

// refused reports whether p's probe of proto/port was refused: how a
// protected port answers under policy reject.
func refused(p peer, proto packet.Proto, port uint16) bool {
	return e2e.IsRefused(probe(p, proto, port, quickProbe))
}

// reachable reports whether p's probe of proto/port got its echo.
func reachable(p peer, proto packet.Proto, port uint16) bool {
	return probe(p, proto, port, quickProbe) == nil
}

// protoPort is one port of the server.
type protoPort struct {
	proto packet.Proto
	port  uint16
}

// wantClosedAll is wantClosed for every peer and port at once, so that
// the timeouts of policy drop overlap.
func (e *env) wantClosedAll(t *testing.T, peers []peer, ports ...protoPort) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range peers {
		for _, pp := range ports {
			wg.Go(func() { e.wantClosed(t, p, pp.proto, pp.port) })
		}
	}
	wg.Wait()
}

// allPeers are the client and mallory in both families.
func (e *env) allPeers() []peer {
	return []peer{e.client(false), e.client(true), e.mallory(false), e.mallory(true)}
}

var (
	hashlimitNameArg = regexp.MustCompile(`--hashlimit-name (\S+)`)
	// generatedHashlimit is the rate limit's table name, which depends on
	// the rate.
	generatedHashlimit = regexp.MustCompile(`sknock_[0-9a-f]{8}\b`)
)

// hashlimitNames returns the hashlimit table names in save.
func hashlimitNames(save string) []string {
	var names []string
	for _, m := range hashlimitNameArg.FindAllStringSubmatch(save, -1) {
		names = append(names, m[1])
	}
	return names
}

// sameRules returns the rules of ns (e2e.IptablesSave) with the rate
// limit's table name made constant, for comparisons that should not
// depend on how that name is made.
func sameRules(t *testing.T, ns *netns.NS) string {
	t.Helper()
	return generatedHashlimit.ReplaceAllString(e2e.IptablesSave(t, ns), "sknock_XXXXXXXX")
}

// familyRules returns the part of an IptablesSave text for tool
// ("iptables" or "ip6tables").
func familyRules(save, tool string) string {
	for _, part := range strings.Split(save, "## ")[1:] {
		if strings.HasPrefix(part, tool+"\n") {
			return part
		}
	}
	return ""
}

// tableRules returns the part of familyRules(save, tool) that lists
// table: from its "*table" line to its COMMIT.
func tableRules(save, tool, table string) string {
	for _, part := range strings.SplitAfter(familyRules(save, tool), "COMMIT\n") {
		if i := strings.Index(part, "*"+table+"\n"); i >= 0 {
			return part[i:]
		}
	}
	return ""
}

// chainRule returns the position (from 1) of the first rule of chain in
// table in tool's part of save whose line holds every one of substrs, or
// 0.
func chainRule(save, tool, table, chain string, substrs ...string) int {
	pos := 0
	for _, line := range strings.Split(tableRules(save, tool, table), "\n") {
		if !strings.HasPrefix(line, "-A "+chain+" ") {
			continue
		}
		pos++
		matches := true
		for _, s := range substrs {
			matches = matches && strings.Contains(line, s)
		}
		if matches {
			return pos
		}
	}
	return 0
}

// nsPIDs returns the processes running in ns.
func nsPIDs(t *testing.T, ns *netns.NS) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns.Name).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns.Name, err)
	}
	return strings.Fields(string(out))
}

// knockPackets asks the daemon for its counters (SIGUSR1) and returns
// knock_packets, the datagrams its knock reader has received.
func (e *env) knockPackets(t *testing.T) uint64 {
	t.Helper()
	from := len(e.daemon.Lines())
	e.daemon.Signal(syscall.SIGUSR1)
	l := e.waitLine(t, from, logTimeout, "counters", func(l e2e.Line) bool { return l.Msg() == "counters" })
	n, err := strconv.ParseUint(l.String("knock_packets"), 10, 64)
	if err != nil {
		t.Fatalf("counters line without knock_packets: %v", l)
	}
	return n
}

// knocksReceived sends n knock-sized datagrams (not knocks: zeros) from p
// to the knock port, gap apart, and returns how many the daemon's knock
// reader received; the rest were dropped by the rate limit.
func (e *env) knocksReceived(t *testing.T, p peer, n int, gap time.Duration) uint64 {
	t.Helper()
	before := e.knockPackets(t)
	target := e2e.AddrPort(e2e.ServerAddr(p.addr), e2e.KnockPort)
	for i := range n {
		if i > 0 {
			time.Sleep(gap)
		}
		if err := e2e.SendUDP(p.ns, target, make([]byte, 400)); err != nil {
			t.Fatalf("send from %s: %v", p.name, err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the reader takes them at once; the counters line must come after
	return e.knockPackets(t) - before
}

// Bounds of a prober. Each dial waits at most proberDial: a SYN that
// the gate let through is answered by the service at once (well under a
// millisecond here), so a slower dial means the SYN was dropped.
const (
	proberDial     = 100 * time.Millisecond
	proberPause    = 2 * time.Millisecond
	proberMaxTries = 50000 // per target
	proberMaxRun   = 2 * time.Minute
	proberNotes    = 5 // leaks and errors kept for the report
)

// prober connects from an ungranted namespace to protected TCP ports in a
// loop, one goroutine per target, until halted: every connection that
// goes through is a failure of the gate. It stops by itself after
// proberMaxTries per target or proberMaxRun.
type prober struct {
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	tries, opened, odd atomic.Int64

	mu    sync.Mutex
	notes []string // the first leaks and unexpected errors
}

// proberCounts is a snapshot of a prober's counters.
type proberCounts struct {
	tries, opened, odd int64 // odd: errors other than refused or a timeout
}

// proberTargets are the ports every prober tries: tcp/2000 and tcp/3000,
// both families.
func proberTargets() []string {
	return []string{
		e2e.AddrPort(e2e.ServerV4, tcpA), e2e.AddrPort(e2e.ServerV6, tcpA),
		e2e.AddrPort(e2e.ServerV4, tcpB), e2e.AddrPort(e2e.ServerV6, tcpB),
	}
}

// startProber starts probing targets from ns; it is halted when t ends
// at the latest.
func startProber(t *testing.T, ns *netns.NS, targets ...string) *prober {
	p := &prober{stop: make(chan struct{})}
	deadline := time.Now().Add(proberMaxRun)
	for _, addr := range targets {
		p.wg.Go(func() { p.probeLoop(ns, addr, deadline) })
	}
	t.Cleanup(p.halt)
	return p
}

func (p *prober) probeLoop(ns *netns.NS, addr string, deadline time.Time) {
	for range proberMaxTries {
		select {
		case <-p.stop:
			return
		default:
		}
		if time.Now().After(deadline) {
			return
		}
		c, err := e2e.DialTCP(ns, addr, proberDial)
		p.tries.Add(1)
		switch {
		case err == nil:
			p.opened.Add(1)
			p.note(fmt.Sprintf("%s connected to %s", time.Now().Format("15:04:05.000"), addr))
			c.Close()
		case e2e.IsRefused(err) || e2e.IsTimeout(err):
		default:
			p.odd.Add(1)
			p.note(fmt.Sprintf("%s: %v", addr, err))
		}
		time.Sleep(proberPause)
	}
}

func (p *prober) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.notes) < proberNotes {
		p.notes = append(p.notes, s)
	}
}

// halt stops the prober and waits for its goroutines.
func (p *prober) halt() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.wg.Wait()
}

func (p *prober) counts() proberCounts {
	return proberCounts{p.tries.Load(), p.opened.Load(), p.odd.Load()}
}

// wantNoneSince fails t if a connection went through since from, or if
// there was no attempt (which would prove nothing); it returns the
// counts now, the start of the next phase.
func (p *prober) wantNoneSince(t *testing.T, phase string, from proberCounts) proberCounts {
	t.Helper()
	now := p.counts()
	tries, opened, odd := now.tries-from.tries, now.opened-from.opened, now.odd-from.odd
	t.Logf("prober during %s: %d tries, %d connected, %d other errors", phase, tries, opened, odd)
	if opened != 0 {
		p.mu.Lock()
		t.Errorf("prober during %s: %d of %d connections to protected ports went through, want 0; first: %q",
			phase, opened, tries, p.notes)
		p.mu.Unlock()
	}
	if tries == 0 {
		t.Errorf("prober during %s: no tries, want some", phase)
	}
	return now
}

// TestIntegrationNoWindow probes protected ports from an ungranted source
// in a tight loop across a restart (SIGTERM, then a start), across kill
// -9 and a start, and across five SIGHUPs that each change the protected
// ports, the policy and the knock rate limit: no connection may go
// through, while a granted client's connections (IPv4 and IPv6, opened
// before) stay up through all of it. The last rate limit (1/minute,
// burst 5) must be in force at the end, where the first one (20/second)
// let every knock through.
func TestIntegrationNoWindow(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t)
	// reject: a hidden port answers at once, so the prober tries often.
	e.startDaemon(t, liveConfig{policy: "reject"})

	var conns []net.Conn
	for _, v6 := range []bool{false, true} {
		c := e.client(v6)
		_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpB)
		checkLine(t, line, map[string]string{"verdict": "grant"})
		conn, err := e2e.DialTCP(c.ns, e2e.AddrPort(e2e.ServerAddr(c.addr), tcpB), probeTimeout)
		if err != nil {
			t.Fatalf("%s: connect after the knock: %v", c.name, err)
		}
		defer conn.Close()
		if err := e2e.Echo(conn, []byte("before\n"), probeTimeout); err != nil {
			t.Fatalf("%s: echo: %v", c.name, err)
		}
		conns = append(conns, conn)
	}

	// The control for the last check: spaced 100 ms apart, knocks stay
	// under 20/second, so all of them reach the daemon.
	t.Run("rate limit 20/second passes spaced knocks", func(t *testing.T) {
		if got := e.knocksReceived(t, e.mallory(false), 12, 100*time.Millisecond); got < 11 {
			t.Errorf("the knock reader received %d of 12 knocks 100 ms apart under 20/second, want 12", got)
		}
	})

	p := startProber(t, e.net.Mallory, proberTargets()...)
	mark := p.counts()

	t.Run("restart", func(t *testing.T) {
		if code := e.daemon.Stop(); code != 0 {
			t.Errorf("exit status after SIGTERM: %d, want 0", code)
		}
		time.Sleep(noDaemonFor)
		e.daemon.Restart()
		time.Sleep(noDaemonFor)
		mark = p.wantNoneSince(t, "SIGTERM and a start", mark)
	})

	t.Run("kill -9 then start", func(t *testing.T) {
		e.daemon.Kill9()
		time.Sleep(noDaemonFor)
		e.daemon.Restart()
		time.Sleep(noDaemonFor)
		mark = p.wantNoneSince(t, "kill -9 and a start", mark)
	})

	t.Run("five SIGHUPs", func(t *testing.T) {
		// Each step changes the policy, the ports and the rate, and
		// keeps tcp/2000 and tcp/3000 protected.
		steps := []liveConfig{
			{policy: "drop", protect: append(slices.Clone(defaultProtect), "tcp/3500"), rateLimit: "10/second"},
			{policy: "reject", protect: []string{"tcp/2000", "tcp/3000", "udp/8000"}, rateLimit: "5/second"},
			{policy: "drop", protect: append(slices.Clone(defaultProtect), "udp/8002"), rateLimit: "30/second"},
			{policy: "reject", protect: []string{"tcp/2000", "tcp/3000"}, rateLimit: "20/second"},
			{policy: "drop", protect: append(slices.Clone(defaultProtect), "tcp/3500"), rateLimit: "1/minute"},
		}
		names := hashlimitNames(e2e.IptablesSave(t, e.net.Server))
		for i, c := range steps {
			e.reload(t, c, "gate.policy", "gate.protect", "knock.rate_limit")
			// xt_hashlimit keeps the rate of an existing table with the
			// same name, so a new rate needs a new name.
			fresh := hashlimitNames(e2e.IptablesSave(t, e.net.Server))
			for _, n := range fresh {
				if slices.Contains(names, n) {
					t.Errorf("step %d (rate %s): hashlimit table %s is the previous rate's; want a new name", i+1, c.rateLimit, n)
				}
			}
			if len(fresh) == 0 {
				t.Errorf("step %d: no hashlimit rule in the rules after a reload with rate %s", i+1, c.rateLimit)
			}
			names = fresh
			time.Sleep(200 * time.Millisecond)
		}
		mark = p.wantNoneSince(t, "five SIGHUPs", mark)
	})

	p.halt()
	total := p.counts()
	t.Logf("prober in all: %d tries, %d connected", total.tries, total.opened)

	t.Run("granted connections stayed up", func(t *testing.T) {
		for i, conn := range conns {
			if err := e2e.Echo(conn, []byte("after\n"), probeTimeout); err != nil {
				t.Errorf("granted connection %d (of client v4, v6) after the restarts and reloads: %v, want the echo", i, err)
			}
		}
	})

	t.Run("rate limit 1/minute in force", func(t *testing.T) {
		// Burst 5: at most 5 (6 if a token comes back) of 12.
		got := e.knocksReceived(t, e.mallory(false), 12, 100*time.Millisecond)
		if got == 0 || got > 6 {
			t.Errorf("the knock reader received %d of 12 knocks 100 ms apart under 1/minute, want 5 (the burst)", got)
		}
	})
}

// TestIntegrationBootStep applies the rules with `sknockd --apply-rules`
// (the boot step) and no daemon: protected ports are closed to everyone,
// knocks and other datagrams on the knock ports get no answer at all.
// Then sknockd starts over those rules while a prober loops, with no
// connection going through, and serves knocks.
func TestIntegrationBootStep(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t)
	cfg := liveConfig{policy: "drop"}
	e.policy = cfg.policy
	path := filepath.Join(t.TempDir(), "boot.yaml")
	writeIntegrationFile(t, path, e.pki.Config(cfg.sections()))

	out, code := e2e.RunSknockd(t, e.net.Server, 20*time.Second, "--config", path, "--apply-rules")
	if code != 0 {
		t.Fatalf("sknockd --apply-rules: exit %d, want 0:\n%s", code, out)
	}
	if pids := nsPIDs(t, e.net.Server); len(pids) > 0 {
		t.Errorf("processes %v left in the server namespace after --apply-rules, want none", pids)
	}
	applied := sameRules(t, e.net.Server)
	checkOneJump(t, applied)

	t.Run("protected ports closed", func(t *testing.T) {
		e.wantClosedAll(t, e.allPeers(), protoPort{packet.TCP, tcpA}, protoPort{packet.UDP, udpA})
		e.wantOpen(t, e.client(false), packet.TCP, sshPort)
	})

	// unanswered sends each datagram from p's namespace on its own
	// connected socket, and fails t if any draws an answer: a datagram
	// back, or an ICMP error (ECONNREFUSED on the read), or if the
	// server's ICMP destination-unreachable counters move.
	unanswered := func(t *testing.T, datagrams [][]byte) {
		t.Helper()
		v4Before, v6Before := e2e.DestUnreachSent(t, e.net.Server)
		var socks []*net.UDPConn
		for _, p := range []peer{e.client(false), e.client(true)} {
			for _, d := range datagrams {
				c, err := e2e.DialUDP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), e2e.KnockPort+5))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(d); err != nil {
					t.Fatalf("%s: send %d bytes: %v", p.name, len(d), err)
				}
				socks = append(socks, c)
			}
		}
		time.Sleep(300 * time.Millisecond)
		for i, c := range socks {
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			if _, err := c.Read(make([]byte, 64)); !e2e.IsTimeout(err) {
				t.Errorf("datagram %d (of %d bytes): got %v, want no answer (a read timeout)", i, len(datagrams[i%len(datagrams)]), err)
			}
		}
		v4After, v6After := e2e.DestUnreachSent(t, e.net.Server)
		if v4After != v4Before || v6After != v6Before {
			t.Errorf("destination unreachables sent: IPv4 %d -> %d, IPv6 %d -> %d; want none", v4Before, v4After, v6Before, v6After)
		}
	}

	t.Run("knocks unanswered", func(t *testing.T) {
		unanswered(t, [][]byte{
			e.alice.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, e2e.ClientV4), // valid for client v4
			make([]byte, 400), // knock-sized
		})
		// The counters do count: a datagram to a closed port draws one.
		v4, _ := e2e.DestUnreachSent(t, e.net.Server)
		if err := e2e.UDPEcho(e.net.Client, e2e.AddrPort(e2e.ServerV4, closedPort), probeTimeout); !e2e.IsRefused(err) {
			t.Errorf("udp to closed port %d: %v, want connection refused", closedPort, err)
		}
		if after, _ := e2e.DestUnreachSent(t, e.net.Server); after != v4+1 {
			t.Errorf("OutDestUnreachs after a datagram to a closed port: %d, want %d", after, v4+1)
		}
	})

	p := startProber(t, e.net.Mallory, proberTargets()...)
	time.Sleep(noDaemonFor)
	e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(cfg.sections()))
	time.Sleep(noDaemonFor)
	p.halt()

	t.Run("sknockd starts with no window", func(t *testing.T) {
		p.wantNoneSince(t, "the start over the boot rules", proberCounts{})
		started := sameRules(t, e.net.Server)
		checkOneJump(t, started)
		if diff := cmp.Diff(applied, started); diff != "" {
			t.Errorf("rules of the boot step and of the started sknockd differ (-boot +started):\n%s", diff)
		}
	})

	t.Run("a knock opens the port", func(t *testing.T) {
		for _, v6 := range []bool{false, true} {
			c := e.client(v6)
			_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
			checkLine(t, line, map[string]string{"verdict": "grant"})
			e.wantOpen(t, c, packet.TCP, tcpA)
		}
	})
}

// TestIntegrationReload changes the configuration with SIGHUP: a port
// added to gate.protect is hidden within 1 s, a port removed is
// reachable, a refused file (bad YAML, unknown key, bad value, missing
// bundle, a key that needs a restart) changes nothing and is logged with
// the key, and a policy change applies live. Grants survive reloads.
func TestIntegrationReload(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t, extraPort)
	cfg := liveConfig{policy: "reject"}
	e.startDaemon(t, cfg)
	c, m4, m6 := e.client(false), e.mallory(false), e.mallory(true)
	_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})

	t.Run("adding a port hides it within 1 s", func(t *testing.T) {
		e.wantOpen(t, m4, packet.TCP, extraPort)
		e.wantOpen(t, m6, packet.TCP, extraPort)
		cfg.protect = append(slices.Clone(defaultProtect), "tcp/3500")
		from, sent := e.hup(t, e.pki.Config(cfg.sections()))
		for _, m := range []peer{m4, m6} {
			if !within(sent, hideLimit, func() bool { return refused(m, packet.TCP, extraPort) }) {
				t.Errorf("%s: tcp/%d not hidden %v after the SIGHUP that protects it (%v later)", m.name, extraPort, hideLimit, time.Since(sent))
			}
		}
		l := e.reloadAnswer(t, from)
		if l.Msg() != msgReloaded {
			t.Fatalf("SIGHUP: %v, want %q", l, msgReloaded)
		}
		checkChanged(t, l, "gate.protect")
		// alice's grant, from before the reload, still opens tcp/2000.
		e.wantOpen(t, c, packet.TCP, tcpA)
	})

	t.Run("removing a port uncovers it", func(t *testing.T) {
		cfg.protect = []string{"tcp/2000", "udp/8000", "udp/8001", "tcp/3500"}
		from, sent := e.hup(t, e.pki.Config(cfg.sections()))
		if !within(sent, 2*hideLimit, func() bool { return reachable(m4, packet.TCP, tcpB) }) {
			t.Errorf("tcp/%d still hidden %v after the SIGHUP that unprotects it", tcpB, 2*hideLimit)
		}
		l := e.reloadAnswer(t, from)
		if l.Msg() != msgReloaded {
			t.Fatalf("SIGHUP: %v, want %q", l, msgReloaded)
		}
		checkChanged(t, l, "gate.protect")
		e.wantClosed(t, m4, packet.TCP, extraPort)
		e.wantClosed(t, m4, packet.TCP, tcpA)
	})

	t.Run("refused file keeps the configuration", func(t *testing.T) {
		good := e.pki.Config(cfg.sections())
		before := e2e.IptablesSave(t, e.net.Server)
		tests := []struct {
			name string
			give string // the whole file
			want string // in the refusal's error
		}{
			{"bad YAML", strings.Replace(good, "protect: [", "protect: [[", 1), ""},
			{"unknown key", strings.Replace(good, "gate:\n", "gate:\n  colour: blue\n", 1), "colour"},
			{"bad value", strings.Replace(good, "policy: reject", "policy: maybe", 1), "gate.policy"},
			{"missing bundle", strings.Replace(good, e.pki.ServerPKCS12, e.pki.ServerPKCS12+".missing", 1), "server.pkcs12"},
			{"restart-only gate.queue", strings.Replace(good, "queue: 101", "queue: 105", 1), "gate.queue"},
			{"restart-only gate.chain", strings.Replace(good, "chain: SKNOCK", "chain: OTHER", 1), "gate.chain"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				if tc.give == good {
					t.Fatal("the test's replacement changed nothing")
				}
				from, _ := e.hup(t, tc.give)
				l := e.reloadAnswer(t, from)
				if l.Msg() != msgRefused || l.String("error") == "" || !strings.Contains(l.String("error"), tc.want) {
					t.Errorf("SIGHUP with a bad file: %v\nwant %q with an error naming %q", l, msgRefused, tc.want)
				}
				if diff := cmp.Diff(before, e2e.IptablesSave(t, e.net.Server)); diff != "" {
					t.Errorf("a refused reload changed the rules (-before +after):\n%s", diff)
				}
				if !refused(m4, packet.TCP, extraPort) || !refused(m6, packet.TCP, tcpA) {
					t.Errorf("after a refused reload a protected port is not refused (tcp/%d v4, tcp/%d v6)", extraPort, tcpA)
				}
				e.wantOpen(t, m4, packet.TCP, tcpB)
			})
		}
		if exited, code := e.daemon.Exited(); exited {
			t.Fatalf("sknockd exited (status %d) after refused reloads", code)
		}
	})

	t.Run("policy change applies live", func(t *testing.T) {
		cfg.policy = "drop"
		e.reload(t, cfg, "gate.policy")
		e.wantClosedAll(t, []peer{m4, m6}, protoPort{packet.TCP, tcpA}, protoPort{packet.TCP, extraPort})
		e.wantOpen(t, c, packet.TCP, tcpA) // alice's grant survived three reloads
	})
}

// tamper is something another tool does to sknock's rules.
type tamper struct {
	name string
	// commands returns the tool's argument lists, given the rules as
	// they are (IptablesSave) and the tool.
	commands func(t *testing.T, save, tool string) [][]string
	// problem lists words of which the "rules restored" line's problem
	// must hold one (in any case).
	problem []string
	// foreign is a rule of someone else's that the tamper added to a
	// built-in chain of table and that must stay (after the jump): an
	// iptables-save line; jump is that chain's jump to SKNOCK, as listed.
	table, foreign, jump string
	// unforeign deletes the foreign rule: the tool's arguments.
	unforeign []string
}

// protectRule is the position in the mangle SKNOCK chain of the rule
// that queues tcp/2000's SYNs to the gate.
func protectRule(t *testing.T, save, tool string) string {
	t.Helper()
	pos := chainRule(save, tool, "mangle", "SKNOCK-SYN", "--dport 2000 ", "NFQUEUE")
	if pos == 0 {
		t.Fatalf("no NFQUEUE rule for tcp/2000 in %s's mangle SKNOCK-SYN chain:\n%s", tool, familyRules(save, tool))
	}
	return strconv.Itoa(pos)
}

var ruleWords = []string{"rule", "missing", "changed", "differ", "added", "extra"}

// The jumps to the chain: the gate's from mangle PREROUTING, the reject
// chain's from filter INPUT and FORWARD.
var (
	preroutingJump = []string{"-t", "mangle", "-D", "PREROUTING", "-j", "SKNOCK"}
	inputJump      = []string{"-t", "filter", "-D", "INPUT", "-j", "SKNOCK"}
	forwardJump    = []string{"-t", "filter", "-D", "FORWARD", "-m", "conntrack", "--ctstate", "DNAT", "-j", "SKNOCK"}
)

var tampers = []tamper{
	{
		name:     "mangle PREROUTING jump deleted",
		commands: func(*testing.T, string, string) [][]string { return [][]string{preroutingJump} },
		problem:  []string{"mangle prerouting has no jump"},
	},
	{
		name:     "filter INPUT jump deleted",
		commands: func(*testing.T, string, string) [][]string { return [][]string{inputJump} },
		problem:  []string{"filter input has no jump"},
	},
	{
		name:     "filter FORWARD jump deleted",
		commands: func(*testing.T, string, string) [][]string { return [][]string{forwardJump} },
		problem:  []string{"filter forward has no jump"},
	},
	{
		name: "mangle POSTROUTING backstop deleted",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{{"-t", "mangle", "-D", "POSTROUTING", "-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL", "-m", "connlabel", "--label", "127", "-j", "DROP"}}
		},
		problem: []string{"mangle postrouting has no"},
	},
	{
		name:     "gate chain flushed",
		commands: func(*testing.T, string, string) [][]string { return [][]string{{"-t", "mangle", "-F", "SKNOCK"}} },
		problem:  []string{"flush", "empty"},
	},
	{
		name:     "reject chain flushed",
		commands: func(*testing.T, string, string) [][]string { return [][]string{{"-t", "filter", "-F", "SKNOCK"}} },
		problem:  []string{"flush", "empty"},
	},
	{
		name: "gate chain deleted",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{preroutingJump, {"-t", "mangle", "-F", "SKNOCK"}, {"-t", "mangle", "-X", "SKNOCK"}}
		},
		problem: []string{"missing", "jump"},
	},
	{
		name: "reject chain deleted",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{inputJump, forwardJump, {"-t", "filter", "-F", "SKNOCK"}, {"-t", "filter", "-X", "SKNOCK"}}
		},
		problem: []string{"missing", "jump"},
	},
	{
		name: "protect rule deleted",
		commands: func(t *testing.T, save, tool string) [][]string {
			return [][]string{{"-t", "mangle", "-D", "SKNOCK-SYN", protectRule(t, save, tool)}}
		},
		problem: ruleWords,
	},
	{
		name: "protect rule changed to ACCEPT",
		commands: func(t *testing.T, save, tool string) [][]string {
			return [][]string{{"-t", "mangle", "-R", "SKNOCK-SYN", protectRule(t, save, tool), "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"}}
		},
		problem: ruleWords,
	},
	{
		name: "ACCEPT added to the gate chain",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{{"-t", "mangle", "-I", "SKNOCK", "1", "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"}}
		},
		problem: ruleWords,
	},
	{
		name: "foreign ACCEPT above the PREROUTING jump",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{{"-t", "mangle", "-I", "PREROUTING", "1", "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"}}
		},
		problem:   []string{"position", "first", "jump"},
		table:     "mangle",
		foreign:   "-A PREROUTING -p tcp -m tcp --dport 2000 -j ACCEPT",
		jump:      "-A PREROUTING -j SKNOCK",
		unforeign: []string{"-t", "mangle", "-D", "PREROUTING", "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"},
	},
	{
		name: "foreign ACCEPT above the INPUT jump",
		commands: func(*testing.T, string, string) [][]string {
			return [][]string{{"-I", "INPUT", "1", "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"}}
		},
		problem:   []string{"position", "first", "jump"},
		table:     "filter",
		foreign:   "-A INPUT -p tcp -m tcp --dport 2000 -j ACCEPT",
		jump:      "-A INPUT -j SKNOCK",
		unforeign: []string{"-D", "INPUT", "-p", "tcp", "--dport", "2000", "-j", "ACCEPT"},
	},
}

// TestIntegrationTamper does to the rules what other firewall tools do,
// in IPv4 and IPv6: delete each of the jumps (mangle PREROUTING, filter
// INPUT and FORWARD) or the backstop (mangle POSTROUTING), flush or delete the gate chain (mangle) or the
// reject chain (filter), delete, change or add a gate rule, insert an
// ACCEPT for a protected port above the PREROUTING or the INPUT jump. Each
// time sknockd must restore its rules within 2 s (tcp/2000 hidden again),
// leave the other tool's rule alone (its own jump moved above it), and log
// an error line naming the family and the problem (table and chain for a
// jump).
func TestIntegrationTamper(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t)
	e.startDaemon(t, liveConfig{policy: "reject"})
	want := sameRules(t, e.net.Server)
	checkOneJump(t, want)

	for _, fam := range []struct {
		tool string
		v6   bool
	}{{"iptables", false}, {"ip6tables", true}} {
		other := "ip6tables"
		if fam.v6 {
			other = "iptables"
		}
		for _, tc := range tampers {
			t.Run(fam.tool+"/"+tc.name, func(t *testing.T) {
				m := e.mallory(fam.v6)
				if got := sameRules(t, e.net.Server); got != want {
					t.Fatalf("rules before the tamper are not the applied ones (an earlier case left them so) (-want +got):\n%s", cmp.Diff(want, got))
				}
				if !refused(m, packet.TCP, tcpA) {
					t.Fatalf("%s: tcp/%d not hidden before the tamper", m.name, tcpA)
				}
				save := e2e.IptablesSave(t, e.net.Server)
				from := len(e.daemon.Lines())
				for _, args := range tc.commands(t, save, fam.tool) {
					e.net.Server.MustRun(append([]string{fam.tool}, args...)...)
				}
				done := time.Now()

				var got string
				isRestored := func() bool {
					got = sameRules(t, e.net.Server)
					if tc.foreign == "" {
						return got == want
					}
					rules := tableRules(got, fam.tool, tc.table)
					jump, foreign := strings.Index(rules, tc.jump+"\n"), strings.Index(rules, tc.foreign+"\n")
					return jump >= 0 && foreign > jump && strings.Replace(got, tc.foreign+"\n", "", 1) == want
				}
				if !within(done, restoreLimit, func() bool { return isRestored() && refused(m, packet.TCP, tcpA) }) {
					t.Errorf("%v after the tamper: rules restored %v, %s -> tcp/%d refused %v; want both within %v; rules (-want +got):\n%s",
						time.Since(done), isRestored(), m.name, tcpA, refused(m, packet.TCP, tcpA), restoreLimit, cmp.Diff(want, got))
				}

				l := e.waitLine(t, from, logTimeout, msgRestored, func(l e2e.Line) bool {
					return l.Msg() == msgRestored && l.String("family") == fam.tool
				})
				t.Logf("%v after the tamper: %s", time.Since(done), l.String("problem"))
				problem := strings.ToLower(l.String("problem"))
				if l.String("level") != "error" || !slices.ContainsFunc(tc.problem, func(w string) bool { return strings.Contains(problem, w) }) {
					t.Errorf("restore line %v: want level error and a problem naming one of %q", l, tc.problem)
				}
				for _, l := range e.daemon.Lines()[from:] {
					if l.Msg() == msgRestored && l.String("family") == other {
						t.Errorf("restore line for the untouched family: %v", l)
					}
				}

				if tc.foreign != "" {
					// Someone else's rule is theirs to remove; without it
					// the rules are exactly ours again.
					e.net.Server.MustRun(append([]string{fam.tool}, tc.unforeign...)...)
					if diff := cmp.Diff(want, sameRules(t, e.net.Server)); diff != "" {
						t.Errorf("rules after removing the foreign rule (-want +got):\n%s", diff)
					}
				}
			})
		}
	}
	if exited, code := e.daemon.Exited(); exited {
		t.Fatalf("sknockd exited (status %d) during the tampering", code)
	}
}

// TestIntegrationSecondInstance starts a second sknockd in the namespace
// of a running one, with the same configuration, with other queue
// numbers, and with other queues and another chain: each is refused
// naming the running instance's pid, before touching any rule, while a
// prober never gets through to the first one's protected ports, which it
// still serves afterwards.
func TestIntegrationSecondInstance(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t)
	first := liveConfig{policy: "reject"}
	e.startDaemon(t, first)
	before := e2e.IptablesSave(t, e.net.Server)
	pid := strconv.Itoa(e.daemon.PID())
	dir := t.TempDir()

	p := startProber(t, e.net.Mallory, proberTargets()...)
	mark := p.counts()
	tests := []struct {
		name string
		give liveConfig
	}{
		{"same configuration", first},
		{"other queues", liveConfig{policy: "reject", knockQueue: 110, gateQueue: 111}},
		{"other queues and chain", liveConfig{policy: "drop", knockQueue: 120, gateQueue: 121, chain: "SKNOCK2"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("second%d.yaml", i))
			writeIntegrationFile(t, path, e.pki.Config(tc.give.sections()))
			out, code := e2e.RunSknockd(t, e.net.Server, 10*time.Second, "--config", path)
			if code != 1 || !strings.Contains(out, "already running") || !strings.Contains(out, "pid") || !strings.Contains(out, pid) {
				t.Errorf("second sknockd: exit %d, output:\n%s\nwant exit 1 and a message saying one is already running, pid %s", code, out, pid)
			}
			if diff := cmp.Diff(before, e2e.IptablesSave(t, e.net.Server)); diff != "" {
				t.Errorf("the refused instance changed the rules (-before +after):\n%s", diff)
			}
			if exited, code := e.daemon.Exited(); exited {
				t.Fatalf("the first instance exited (status %d)", code)
			}
			mark = p.wantNoneSince(t, "a second sknockd ("+tc.name+")", mark)
		})
	}
	p.halt()

	t.Run("the first instance still serves", func(t *testing.T) {
		c := e.client(false)
		_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
		checkLine(t, line, map[string]string{"verdict": "grant"})
		e.wantOpen(t, c, packet.TCP, tcpA)
		e.wantClosed(t, e.mallory(false), packet.TCP, tcpA)
	})
}
