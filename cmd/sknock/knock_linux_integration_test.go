//go:build linux

package main

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/testenv"
)

// openDuration is the daemon's grant lifetime in these tests: short, so a
// run can wait for the grants of the previous one to expire and measure a
// knock on a closed port again.
const openDuration = time.Second

// knockEnv is a gatekeeper in a server namespace protecting tcp/2000,
// tcp/3000 and udp/8000 (echo services), and a client certificate allowed
// tcp/2000 and udp/8000.
type knockEnv struct {
	t      *testing.T
	sknock string
	net    *e2e.Net
	pki    *e2e.PKI
	bundle string
	daemon *e2e.Daemon
}

func newKnockEnv(t *testing.T) *knockEnv {
	testenv.RequireRoot(t)
	_, sknock := e2e.BuildBinaries(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t)
	alice := p.Client(t, "alice", "tcp/2000,udp/8000")
	e2e.ServeTCPEcho(t, n.Server, ":2000")
	e2e.ServeTCPEcho(t, n.Server, ":3000")
	e2e.ServeUDPEcho(t, n.Server, ":8000")
	d := e2e.StartDaemon(t, n, p.Config(`knock:
  ports: "10000:60000"
gate:
  protect: [tcp/2000, tcp/3000, udp/8000]
  open_duration: 1s
  policy: drop
`))
	return &knockEnv{t: t, sknock: sknock, net: n, pki: p, bundle: alice.PKCS12, daemon: d}
}

type sknockRun struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// knock runs `sknock knock` with the client's files and args in the client
// namespace, stdin (may be nil) as its standard input.
func (e *knockEnv) knock(stdin string, args ...string) sknockRun {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	argv := append([]string{e.sknock, "knock", "--pkcs12", e.bundle, "--server-cert", e.pki.ServerCert, "--password-file", e.pki.PasswordFile}, args...)
	return runSknock(e.t, e.net.Client.Command(ctx, argv...), stdin)
}

// runSknock runs cmd (sknock in a namespace) with stdin as its standard
// input, logs and returns what it printed and its exit status; an error
// other than a non-zero exit fails t.
func runSknock(t *testing.T, cmd *exec.Cmd, stdin string) sknockRun {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := sknockRun{stdout: out.String(), stderr: errOut.String(), elapsed: time.Since(start)}
	if exit, ok := err.(*exec.ExitError); ok {
		r.code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("run sknock: %v", err)
	}
	t.Logf("%s: exit %d in %s\nstdout: %sstderr: %s", strings.Join(cmd.Args, " "), r.code, r.elapsed.Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// waitClosed waits out the grants of an earlier knock and checks that
// addr (TCP) is hidden again.
func (e *knockEnv) waitClosed(addr string) {
	e.t.Helper()
	time.Sleep(openDuration + 200*time.Millisecond)
	if err := e2e.TCPEcho(e.net.Client, addr, 150*time.Millisecond); err == nil {
		e.t.Fatalf("%s open before the knock", addr)
	}
}

var verifiedIn = regexp.MustCompile(`open \(verified in ([0-9.]+[µnm]?s)\)`)

func TestIntegrationKnockVerifiesTCP(t *testing.T) {
	e := newKnockEnv(t)
	addr := e2e.AddrPort(e2e.ServerV4, 2000)
	var times []time.Duration
	for range 5 {
		e.waitClosed(addr)
		r := e.knock("", e2e.ServerV4.String(), "tcp/2000")
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		m := verifiedIn.FindStringSubmatch(r.stdout)
		if m == nil {
			t.Fatalf("stdout %q, want tcp/2000 open (verified in …)", r.stdout)
		}
		d, err := time.ParseDuration(m[1])
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, d)
		if err := e2e.TCPEcho(e.net.Client, addr, time.Second); err != nil {
			t.Fatalf("tcp/2000 after the knock: %v", err)
		}
	}
	slices.Sort(times)
	t.Logf("knock-to-verified over %d runs: median %s (min %s, max %s)", len(times), times[len(times)/2], times[0], times[len(times)-1])
}

func TestIntegrationKnockTCPAndUDP(t *testing.T) {
	e := newKnockEnv(t)
	e.waitClosed(e2e.AddrPort(e2e.ServerV4, 2000))
	r := e.knock("", e2e.ServerV4.String(), "tcp/2000", "UDP/8000")
	if r.code != 0 || !strings.Contains(r.stdout, "tcp/2000 open (verified in ") || !strings.Contains(r.stdout, "udp/8000 knocked (UDP cannot be verified)") {
		t.Fatalf("exit %d, stdout %q; want 0, tcp/2000 open and udp/8000 knocked", r.code, r.stdout)
	}
	if err := e2e.UDPEcho(e.net.Client, e2e.AddrPort(e2e.ServerV4, 8000), time.Second); err != nil {
		t.Errorf("udp/8000 after the knock: %v", err)
	}
}

func TestIntegrationKnockIPv6(t *testing.T) {
	e := newKnockEnv(t)
	addr := e2e.AddrPort(e2e.ServerV6, 2000)
	e.waitClosed(addr)
	r := e.knock("", "-6", e2e.ServerV6.String(), "tcp/2000")
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) {
		t.Fatalf("exit %d, stdout %q; want 0 and tcp/2000 open", r.code, r.stdout)
	}
	if err := e2e.TCPEcho(e.net.Client, addr, time.Second); err != nil {
		t.Errorf("tcp/2000 over IPv6 after the knock: %v", err)
	}
	if err := e2e.TCPEcho(e.net.Client, e2e.AddrPort(e2e.ServerV4, 2000), 150*time.Millisecond); err == nil {
		t.Error("an IPv6 knock opened tcp/2000 for the client's IPv4 address too")
	}
}

// TestIntegrationKnockUnauthorised: a port the certificate does not allow
// is refused by the client with words that say what it allows, and no
// knock leaves for it: the gatekeeper's first knock line is the next
// knock's.
func TestIntegrationKnockUnauthorised(t *testing.T) {
	e := newKnockEnv(t)
	r := e.knock("", e2e.ServerV4.String(), "tcp/3000")
	const want = "sknock knock: port not authorised by your certificate: your certificate allows tcp/2000, udp/8000, not tcp/3000 (nothing sent)\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
	e.waitClosed(e2e.AddrPort(e2e.ServerV4, 2000))
	if r := e.knock("", e2e.ServerV4.String(), "tcp/2000"); r.code != 0 {
		t.Fatalf("tcp/2000: exit %d, stderr %q", r.code, r.stderr)
	}
	if line := e.daemonLine(0); line.String("requests") != "tcp/2000" {
		t.Errorf("the gatekeeper's first knock line is for %q, want tcp/2000 (tcp/3000's knock was sent)", line.String("requests"))
	}
}

// daemonLine waits for the first knock line of the daemon's log from
// line from on.
func (e *knockEnv) daemonLine(from int) e2e.Line {
	e.t.Helper()
	return e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" })
}

func TestIntegrationKnockConnect(t *testing.T) {
	e := newKnockEnv(t)
	e.waitClosed(e2e.AddrPort(e2e.ServerV4, 2000))
	const msg = "through the gatekeeper and back\n"
	r := e.knock(msg, "--connect", e2e.ServerV4.String(), "tcp/2000")
	if r.code != 0 || r.stdout != msg {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0 and the echo", r.code, r.stdout, r.stderr)
	}
}
