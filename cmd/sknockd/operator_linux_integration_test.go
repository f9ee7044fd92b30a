//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/control"
	"sknock/internal/e2e"
	"sknock/internal/metrictest"
	"sknock/internal/testenv"
	"sknock/packet"
)

// metricsListen is where the operator test's daemon serves metrics:
// loopback inside the server's own namespace.
const metricsListen = "127.0.0.1:9466"

// newOperatorEnv is newEnv (policy reject) with metrics on.
func newOperatorEnv(t *testing.T) *env {
	t.Helper()
	e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: "reject"}
	e.alice = e.pki.Client(t, "alice", "tcp/2000,tcp/3000,udp/8000,udp/8001")
	e.carol = e.pki.Client(t, "carol", "tcp/2000,tcp/3000")
	e2e.ServeTCPEcho(t, e.net.Server, fmt.Sprintf(":%d", tcpA))
	// No knock rate limit: the flood below reaches the workers whole.
	knockSections := strings.Replace(fmt.Sprintf(sections, "reject", "1m"), "knock:\n", "knock:\n  rate_limit: \"\"\n", 1)
	cfg := e.pki.Config(knockSections + "metrics:\n  listen: " + metricsListen + "\n")
	e.daemon = e2e.StartDaemon(t, e.net, cfg)
	return e
}

// sknockCLI runs the real client binary with args as root, and returns
// its stdout, stderr and exit status.
func sknockCLI(t *testing.T, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	_, bin := e2e.BuildBinaries(t)
	if cred != nil {
		bin = copyForAnyone(t, bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("sknock %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return out.String(), errOut.String(), code
}

// copyForAnyone copies the binary at path into a directory every user
// may enter, so that a test can run it as another user.
func copyForAnyone(t *testing.T, path string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sknock-anyone-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data, err := os.ReadFile(path)
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	out := filepath.Join(dir, filepath.Base(path))
	if err == nil {
		err = os.WriteFile(out, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// scrapeIn fetches /metrics from addr inside the server namespace.
func scrapeIn(t *testing.T, e *env, addr string) string {
	t.Helper()
	body, err := tryScrapeIn(e, addr)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return body
}

// TestIntegrationOperator runs the real daemon and client: a real knock's
// grant is listed by `sknock grants list`, `sknock grants revoke` ends it
// and the connection it let in, the socket refuses a user other than
// root, `sknock status` answers, and a scrape of the metrics listener
// counts the knocks and passes promtool.
func TestIntegrationOperator(t *testing.T) {
	requireTools(t, "conntrack")
	e := newOperatorEnv(t)
	socket := e.pki.ControlSocket()
	carol := e.client(false)
	_, line := e.knock(t, e.carol, carol, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})
	e.knock(t, e.alice, e.mallory(false), netip.Addr{}, packet.TCP, tcpB) // alice from another source

	out, errOut, code := sknockCLI(t, nil, "grants", "list", "--json", "--socket", socket)
	if code != 0 {
		t.Fatalf("sknock grants list: exit %d: %s", code, errOut)
	}
	var listed control.Response
	if err := json.Unmarshal([]byte(out), &listed); err != nil {
		t.Fatalf("grants list --json: %v\n%s", err, out)
	}
	var carolGrant *control.Grant
	for i, g := range listed.Grants {
		if g.Source == carol.addr.String() {
			carolGrant = &listed.Grants[i]
		}
	}
	if listed.Live != 2 || carolGrant == nil || carolGrant.Proto != "tcp" || carolGrant.Port != tcpA ||
		carolGrant.Serial != e.carol.Serial() || !strings.Contains(carolGrant.Subject, "carol") || carolGrant.SecondsLeft < 50 {
		t.Fatalf("grants list: %s\nwant carol's tcp/%d grant (serial %s) with about a minute left, and alice's", out, tcpA, e.carol.Serial())
	}
	if out, _, _ := sknockCLI(t, nil, "grants", "list", "--socket", socket); !strings.Contains(out, carol.addr.String()) || !strings.Contains(out, "tcp/2000") {
		t.Errorf("grants list (table) lacks carol's grant:\n%s", out)
	}

	// Carol holds a connection, talking every quarter second.
	conn, err := e2e.DialTCP(carol.ns, e2e.AddrPort(e2e.ServerAddr(carol.addr), tcpA), probeTimeout)
	if err != nil {
		t.Fatalf("carol: connect after the grant: %v", err)
	}
	defer conn.Close()
	stopped := make(chan time.Time, 1)
	go func() {
		r := bufio.NewReader(conn)
		for range 200 { // at most 50 s
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte("ping\n")); err != nil {
				stopped <- time.Now()
				return
			}
			if _, err := r.ReadString('\n'); err != nil {
				stopped <- time.Now()
				return
			}
			time.Sleep(250 * time.Millisecond)
		}
	}()
	time.Sleep(600 * time.Millisecond)

	// Not root: refused (the socket is root's alone).
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if _, errOut, code := sknockCLI(t, nobody, "grants", "revoke", "--all", "--socket", socket); code != 1 || !strings.Contains(errOut, "permission denied") {
		t.Errorf("sknock grants revoke as uid 65534: exit %d, %q; want refused (permission denied)", code, errOut)
	}
	// With the file modes opened up, the kernel's word on the caller
	// (SO_PEERCRED) still refuses it.
	opened := []string{socket}
	for dir := filepath.Dir(socket); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		opened = append(opened, dir)
	}
	modes := map[string]os.FileMode{}
	for _, p := range opened {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		modes[p] = fi.Mode().Perm()
		os.Chmod(p, 0o777)
	}
	_, errOut, code = sknockCLI(t, nobody, "grants", "list", "--socket", socket)
	for p, m := range modes {
		os.Chmod(p, m)
	}
	if code != 1 || !strings.Contains(errOut, "only root may use the control socket") {
		t.Errorf("sknock grants list as uid 65534 through an open socket: exit %d, %q; want refused by sknockd", code, errOut)
	}
	select {
	case at := <-stopped:
		t.Fatalf("carol's connection ended before the revoke, at %v", at)
	default:
	}

	sent := time.Now()
	out, errOut, code = sknockCLI(t, nil, "grants", "revoke", "--source", carol.addr.String(), "--socket", socket)
	if code != 0 || !strings.Contains(out, "ended 1 grant(s) and 1 connection(s)") {
		t.Fatalf("sknock grants revoke --source: exit %d\n%s%s", code, out, errOut)
	}
	select {
	case at := <-stopped:
		if took := at.Sub(sent); took > 2*time.Second {
			t.Errorf("carol's connection ended %v after the revoke, want within 2 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("carol's connection still talks 5 s after the revoke")
	}
	e.wantClosed(t, carol, packet.TCP, tcpA)
	if out, _, _ := sknockCLI(t, nil, "grants", "list", "--json", "--socket", socket); strings.Contains(out, carol.addr.String()) || !strings.Contains(out, e2e.MalloryV4.String()) {
		t.Errorf("grants after revoking carol's source: %s; want alice's only", out)
	}

	out, errOut, code = sknockCLI(t, nil, "status", "--socket", socket)
	if code != 0 || !strings.Contains(out, "rules:    whole") || !strings.Contains(out, e.daemon.Config) || !strings.Contains(out, "crl:      fresh") {
		t.Errorf("sknock status: exit %d\n%s%s", code, out, errOut)
	}

	// A bounded flood of garbage knocks from mallory, scraped meanwhile:
	// every datagram is decided, counted by reason and timed.
	const flood = 300
	scrapes := make(chan string, 64)
	done := make(chan struct{})
	go func() {
		defer close(scrapes)
		for {
			select {
			case <-done:
				return
			default:
			}
			if body, err := tryScrapeIn(e, metricsListen); err == nil {
				scrapes <- body
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	mallory := e.mallory(false)
	// An unconnected socket: the closed-port answers (policy reject) do
	// not fail its next sends.
	var pc net.PacketConn
	if err := mallory.ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", mallory.addr.String()+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.UDPAddr{IP: e2e.ServerAddr(mallory.addr).AsSlice(), Port: 40000}
	garbage := make([]byte, 400)
	for i := range flood {
		garbage[0], garbage[1] = byte(i), byte(i>>8)
		if _, err := pc.WriteTo(garbage, dst); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(20 * time.Millisecond) // within the kernel's knock queue, whatever the machine's load
		}
	}
	var body string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		body = scrapeIn(t, e, metricsListen)
		if metrictest.Value(body, "sknock_knock_decision_seconds_count") >= 2+flood {
			break
		}
	}
	close(done)
	during := 0
	for range scrapes {
		during++
	}
	if during == 0 {
		t.Error("no scrape answered during the flood")
	}
	denied := 0.0
	for line := range strings.Lines(body) {
		if strings.HasPrefix(line, "sknock_knocks_total{") && strings.Contains(line, `verdict="deny"`) {
			denied += metrictest.Value(line, strings.Fields(line)[0])
		}
	}
	for series, want := range map[string]float64{
		`sknock_knocks_total{reason="granted",verdict="grant"}`: 2,
		`sknock_knock_decision_seconds_count`:                   2 + flood,
		`sknock_knock_packets_total`:                            2 + flood,
		`sknock_knock_shed_total`:                               0,
		`sknock_grants`:                                         1,
		`sknock_rules_healthy`:                                  1,
	} {
		if got := metrictest.Value(body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if denied != flood {
		t.Errorf("denied knocks by reason sum to %v, want the %d of the flood:\n%s", denied, flood, body)
	}
	metrictest.PromtoolCheck(t, body)
}

// tryScrapeIn is scrapeIn for another goroutine: it returns the error.
func tryScrapeIn(e *env, addr string) (string, error) {
	conn, err := e2e.DialTCP(e.net.Server, addr, probeTimeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("scrape: %s", resp.Status)
	}
	return string(body), err
}

// notifyListener is a NOTIFY_SOCKET of a test's own: it records every
// sd_notify datagram in order.
type notifyListener struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	at   []time.Time
	got  chan struct{} // a signal per datagram (bounded; extra are dropped)
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{path: path, conn: conn, got: make(chan struct{}, 1024)}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.at = append(n.at, time.Now())
			n.mu.Unlock()
			select {
			case n.got <- struct{}{}:
			default:
			}
		}
	}()
	return n
}

// messages returns the datagrams received so far.
func (n *notifyListener) messages() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// waitFor waits for a datagram after the first from that starts with
// prefix and returns its index.
func (n *notifyListener) waitFor(t *testing.T, from int, prefix string) int {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		for i, m := range n.messages() {
			if i >= from && strings.HasPrefix(m, prefix) {
				return i
			}
		}
		select {
		case <-n.got:
		case <-deadline:
			t.Fatalf("no %q notification after #%d; got %q", prefix, from, n.messages())
		}
	}
}

// count returns how many datagrams after from start with prefix.
func (n *notifyListener) count(from int, prefix string) int {
	c := 0
	for i, m := range n.messages() {
		if i >= from && strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

// TestIntegrationSystemdNotify acts as systemd for the real daemon
// through a NOTIFY_SOCKET of its own, with a 1 s watchdog: READY=1 is the
// first message and the rules are in place when it comes; WATCHDOG=1
// keeps coming while the gate sits idle for several watchdog intervals
// (the daemon is not wedged by waiting for packets) and while it works;
// SIGHUP sends RELOADING=1 then READY=1; SIGTERM sends STOPPING=1.
func TestIntegrationSystemdNotify(t *testing.T) {
	requireTools(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t)
	carol := p.Client(t, "carol", "tcp/2000")
	e2e.ServeTCPEcho(t, n.Server, fmt.Sprintf(":%d", tcpA))
	path := filepath.Join(t.TempDir(), "sknockd.yaml")
	if err := os.WriteFile(path, []byte(p.Config(fmt.Sprintf(sections, "reject", "1m"))), 0o600); err != nil {
		t.Fatal(err)
	}
	bin, _ := e2e.BuildBinaries(t)
	notify := listenNotify(t)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := n.Server.Command(ctx, bin, "--config", path)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify.path, "WATCHDOG_USEC=1000000")
	var logs testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("sknockd log:\n%s", logs.String())
		}
	}()

	ready := notify.waitFor(t, 0, "READY=1")
	if ready != 0 {
		t.Errorf("READY=1 came as message #%d after %q; want it first", ready, notify.messages()[:ready])
	}
	save := e2e.IptablesSave(t, n.Server)
	if !strings.Contains(save, "-j NFQUEUE --queue-num 101") || !strings.Contains(save, "SKNOCK") {
		t.Fatalf("READY=1 came, but the rules are not in place:\n%s", save)
	}

	// Idle: 3.5 watchdog intervals without a packet.
	from := len(notify.messages())
	time.Sleep(3500 * time.Millisecond)
	if got := notify.count(from, "WATCHDOG=1"); got < 4 {
		t.Errorf("%d WATCHDOG=1 in 3.5 s of an idle gate, want at least 4 (every 0.5 s)", got)
	}
	select {
	case err := <-exited:
		t.Fatalf("sknockd exited while idle: %v", err)
	default:
	}

	// Working: a knock, connections, and WATCHDOG=1 goes on.
	from = len(notify.messages())
	client := peer{"client v4", n.Client, e2e.ClientV4}
	datagram := carol.Seal(t, p.ServerKey, packet.TCP, tcpA, client.addr)
	if err := e2e.SendUDP(client.ns, e2e.AddrPort(e2e.ServerAddr(client.addr), 40000), datagram); err != nil {
		t.Fatal(err)
	}
	var connected bool
	for range 20 {
		if err := probe(client, packet.TCP, tcpA, probeTimeout); err == nil {
			connected = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !connected {
		t.Error("no connection after the knock")
	}
	notify.waitFor(t, from, "WATCHDOG=1")

	from = len(notify.messages())
	cmd.Process.Signal(syscall.SIGHUP)
	reloading := notify.waitFor(t, from, "RELOADING=1\nMONOTONIC_USEC=")
	if readyAgain := notify.waitFor(t, reloading+1, "READY=1"); !strings.Contains(notify.messages()[readyAgain], "configuration reloaded") {
		t.Errorf("READY=1 after the reload says %q, want it reloaded", notify.messages()[readyAgain])
	}

	from = len(notify.messages())
	cmd.Process.Signal(syscall.SIGTERM)
	notify.waitFor(t, from, "STOPPING=1")
}
