//go:build linux

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/knock/client/stun"
)

// The NAT topology: a client on a "LAN" behind a masquerading router, the
// gatekeeper on the router's "public" side. Both sides are test ranges
// (198.19.0.0/24 stands in for the private LAN), so the client does not
// take the LAN for private: the tests name --source-ip auto.
var (
	natServer = netip.MustParseAddr("198.18.0.1")   // gatekeeper and STUN server
	natWAN    = netip.MustParseAddr("198.18.0.254") // the router's public address
	natLAN    = netip.MustParseAddr("198.19.0.1")   // the router on the LAN
	natClient = netip.MustParseAddr("198.19.0.2")
)

const natSTUNPort = 3478

// natEchoPort is where the address echo listens beside the gatekeeper.
const natEchoPort = 8443

// natEnv is the NAT topology with sknockd protecting tcp/2000 (an echo
// service), a STUN server beside it, and a client allowed tcp/2000.
type natEnv struct {
	t                     *testing.T
	sknock                string
	server, router, cli   *netns.NS
	daemon                *e2e.Daemon
	pki                   *e2e.PKI
	bundle                string
	cacheDir, profilesDir string
	env                   []string // more environment for the client
	// echo is the HTTPS address echo beside the gatekeeper; its CA is the
	// client's only root (SSL_CERT_FILE).
	echo e2e.AddressEcho
}

// link joins a and b with a veth pair named ifA in a and ifB in b, and
// gives them the /24 addresses.
func link(t *testing.T, a *netns.NS, ifA string, addrA netip.Addr, b *netns.NS, ifB string, addrB netip.Addr) {
	t.Helper()
	tmp := "v" + b.Name[len(b.Name)-6:] + ifB
	if len(tmp) > 15 {
		tmp = tmp[:15]
	}
	a.MustRun("ip", "link", "add", ifA, "type", "veth", "peer", "name", tmp, "netns", b.Name)
	b.MustRun("ip", "link", "set", tmp, "name", ifB)
	a.MustRun("ip", "addr", "add", addrA.String()+"/24", "dev", ifA)
	b.MustRun("ip", "addr", "add", addrB.String()+"/24", "dev", ifB)
	a.MustRun("ip", "link", "set", ifA, "up")
	b.MustRun("ip", "link", "set", ifB, "up")
}

// newNATEnv makes the NAT topology and starts sknockd; daemonConfig, if
// given, returns its configuration (the PKI made).
func newNATEnv(t *testing.T, daemonConfig ...func(*natEnv) string) *natEnv {
	testenv.RequireRoot(t)
	_, sknock := e2e.BuildBinaries(t)
	e := &natEnv{t: t, sknock: sknock, cacheDir: t.TempDir(), profilesDir: t.TempDir()}
	e.server, e.router, e.cli = netns.New(t, "nsrv"), netns.New(t, "nrtr"), netns.New(t, "ncli")
	link(t, e.server, "wan0", natServer, e.router, "wan0", natWAN)
	link(t, e.router, "lan0", natLAN, e.cli, "lan0", natClient)
	e.cli.MustRun("ip", "route", "add", "default", "via", natLAN.String())
	e.router.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	e.router.MustRun("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")

	var conn net.PacketConn
	if err := e.server.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", netip.AddrPortFrom(natServer, natSTUNPort).String())
		return err
	}); err != nil {
		t.Fatalf("STUN server: %v", err)
	}
	go stun.Serve(conn)
	t.Cleanup(func() { conn.Close() })
	e.echo = e2e.ServeAddressEcho(t, e.server, netip.AddrPortFrom(natServer, natEchoPort), netip.Addr{})

	e.pki = e2e.NewPKI(t)
	e.bundle = e.pki.Client(t, "alice", "tcp/2000,tcp/2200").PKCS12
	e2e.ServeTCPEcho(t, e.server, ":2000")
	serveSSHBanner(t, e.server, ":2200")
	config := e.pki.Config(`knock:
  ports: "10000:60000"
gate:
  protect: [tcp/2000, tcp/2200]
  open_duration: 1s
  policy: drop
`)
	if len(daemonConfig) > 0 {
		config = daemonConfig[0](e)
	}
	e.daemon = e2e.StartDaemon(t, &e2e.Net{Server: e.server}, config)
	return e
}

// run runs `sknock ARGS...` in the client namespace, with the test's own
// cache and configuration directories.
func (e *natEnv) run(stdin string, args ...string) sknockRun {
	e.t.Helper()
	return e.runCommand(stdin, append([]string{e.sknock}, args...)...)
}

// runCommand runs argv in the client namespace as run does.
func (e *natEnv) runCommand(stdin string, argv ...string) sknockRun {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := e.cli.Command(ctx, argv...)
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+e.cacheDir, "XDG_CONFIG_HOME="+e.profilesDir, "SKNOCK_PASSWORD=", "SSL_CERT_FILE="+e.echo.CAFile)
	cmd.Env = append(cmd.Env, e.env...)
	return runSknock(e.t, cmd, stdin)
}

func (e *natEnv) knock(args ...string) sknockRun {
	e.t.Helper()
	return e.run("", append([]string{"knock", "--pkcs12", e.bundle, "--server-cert", e.pki.ServerCert, "--password-file", e.pki.PasswordFile}, args...)...)
}

// waitClosed waits out earlier grants and checks that tcp/2000 is hidden
// from the client again.
func (e *natEnv) waitClosed() {
	e.t.Helper()
	time.Sleep(openDuration + 200*time.Millisecond)
	if err := e2e.TCPEcho(e.cli, e2e.AddrPort(natServer, 2000), 150*time.Millisecond); err == nil {
		e.t.Fatal("tcp/2000 open before the knock")
	}
}

// sshBanner is the software name of the stand-in sshd.
const sshBanner = "sknocktest"

// serveSSHBanner listens on addr inside ns and, like an sshd, greets each
// connection with its version line; it reads the client's line and
// closes, so ssh ends right after the banner exchange.
func serveSSHBanner(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("ssh banner server on %s: %v", addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "SSH-2.0-%s\r\n", sshBanner)
				bufio.NewReader(c).ReadString('\n')
			}()
		}
	}()
}

// usualTimeout is how long a failing knock may take with the default
// --retries and --timeout, plus slack for starting the process.
const usualTimeout = 4*time.Second + 2*time.Second

// TestIntegrationKnockBehindNAT: behind a masquerading router, --source-ip
// auto learns the router's public address from the HTTPS address echo in
// the test and the knock opens the port; the gatekeeper logs the NAT'd
// address as the client's, and the authenticated answer is cached. With
// --stun, plain STUN answers instead (with a warning) and is not cached.
// With the echo unreachable the knock fails at once, naming NAT and
// --source-ip; with --source-ip set to the router's address it opens.
func TestIntegrationKnockBehindNAT(t *testing.T) {
	e := newNATEnv(t)
	stunAddr := netip.AddrPortFrom(natServer, natSTUNPort).String()
	cache := filepath.Join(e.cacheDir, "sknock", "address.json")
	e.waitClosed()

	r := e.knock("--source-ip", "auto", "--address-url", e.echo.URL, natServer.String(), "tcp/2000")
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) || r.stderr != "" {
		t.Fatalf("auto behind NAT: exit %d, stdout %q, stderr %q; want tcp/2000 open, no warning", r.code, r.stdout, r.stderr)
	}
	line := e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool {
		return l.Msg() == "knock" && l.String("verdict") == "grant"
	})
	if line.String("source") != natWAN.String() || line.String("client_ip") != natWAN.String() {
		t.Errorf("grant line: source %q, client_ip %q; want both %s (the router's address)", line.String("source"), line.String("client_ip"), natWAN)
	}
	if _, err := os.Stat(cache); err != nil {
		t.Errorf("the echo's answer was not cached: %v", err)
	}

	e.waitClosed()
	os.RemoveAll(filepath.Join(e.cacheDir, "sknock"))
	r = e.knock("--stun", stunAddr, natServer.String(), "tcp/2000")
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) || !strings.Contains(r.stderr, "not authenticated") {
		t.Errorf("--stun alone (implies STUN): exit %d, stdout %q, stderr %q; want tcp/2000 open and the warning", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(cache); err == nil {
		t.Error("a STUN answer was cached")
	}

	// What auto adds to a whole knock on this LAN (a figure for the
	// log, not an assertion): fixed address, auto cold, auto cached.
	median := func(args ...string) (time.Duration, bool) {
		var times []time.Duration
		for range 5 {
			if args[1] == "auto" && args[len(args)-1] == "cold" {
				os.RemoveAll(filepath.Join(e.cacheDir, "sknock"))
			}
			r := e.knock(append(args[:len(args)-1:len(args)-1], natServer.String(), "tcp/2000")...)
			if r.code != 0 && r.code != exitAlreadyOpen { // the last knock's grant may still be live
				return 0, false
			}
			times = append(times, r.elapsed)
		}
		slices.Sort(times)
		return times[len(times)/2], true
	}
	fixed, ok1 := median("--source-ip", natWAN.String(), "-")
	cold, ok2 := median("--source-ip", "auto", "--address-url", e.echo.URL, "cold")
	cached, ok3 := median("--source-ip", "auto", "--address-url", e.echo.URL, "cached")
	if !ok1 || !ok2 || !ok3 {
		t.Fatal("a timed knock failed")
	}
	t.Logf("whole knock, median of 5: --source-ip %s %s; auto cold %s; auto cached %s", natWAN, fixed, cold, cached)

	// The echo unreachable: nothing listens on the port named.
	e.waitClosed()
	os.RemoveAll(filepath.Join(e.cacheDir, "sknock"))
	dead := "https://" + netip.AddrPortFrom(natServer, natEchoPort+1).String() + "/ip"
	r = e.knock("--source-ip", "auto", "--address-url", dead, natServer.String(), "tcp/2000")
	if r.code != 1 || !strings.Contains(r.stderr, "NAT") || !strings.Contains(r.stderr, "--source-ip") {
		t.Errorf("echo unreachable: exit %d, stderr %q; want 1 and a message naming NAT and --source-ip", r.code, r.stderr)
	}
	if r.elapsed > usualTimeout {
		t.Errorf("echo unreachable: gave up after %s, want within the usual %s", r.elapsed, usualTimeout)
	}

	r = e.knock("--source-ip", natWAN.String(), natServer.String(), "tcp/2000")
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) {
		t.Errorf("--source-ip %s: exit %d, stdout %q, stderr %q; want tcp/2000 open", natWAN, r.code, r.stdout, r.stderr)
	}

	// The default mode takes the LAN for private (the test's stand-in:
	// 198.19.0.0/16) and the gatekeeper's address for public, so it asks
	// the echo with no --source-ip at all.
	e.waitClosed()
	os.RemoveAll(filepath.Join(e.cacheDir, "sknock"))
	e.env = []string{testInternalEnv + "=198.19.0.0/16"}
	from := len(e.daemon.Lines())
	r = e.knock("--address-url", e.echo.URL, natServer.String(), "tcp/2000")
	e.env = nil
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) {
		t.Errorf("default mode behind a private LAN: exit %d, stdout %q, stderr %q; want tcp/2000 open", r.code, r.stdout, r.stderr)
	}
	if line := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" }); line.String("client_ip") != natWAN.String() {
		t.Errorf("default mode embedded %q, want %s (the echo's answer)", line.String("client_ip"), natWAN)
	}

	// Embedding the LAN address fails, and the message says what was
	// embedded and where the reason is logged.
	e.waitClosed()
	r = e.knock("--source-ip", "local", "--retries", "1", "--timeout", "300ms", natServer.String(), "tcp/2000")
	if r.code != 1 || !strings.Contains(r.stderr, "port did not open after 2 knocks") || !strings.Contains(r.stderr, "knock log line for client "+natClient.String()) {
		t.Errorf("--source-ip local behind NAT: exit %d, stderr %q; want 1 and the embedded address", r.code, r.stderr)
	}
	mismatch := e.daemon.WaitLine(0, 5*time.Second, func(l e2e.Line) bool {
		return l.Msg() == "knock" && l.String("client_ip") == natClient.String()
	})
	if mismatch.String("reason") != "source_mismatch" {
		t.Errorf("the LAN address's knock: reason %q, want source_mismatch", mismatch.String("reason"))
	}
}

// TestIntegrationKnockFromProfile: behind the NAT, "sknock knock gate1"
// with only a profile (default place, $XDG_CONFIG_HOME) opens the port, and
// the ssh ProxyCommand form "sknock knock --connect %h tcp/%p" splices the
// verified connection with nothing else on the command line.
func TestIntegrationKnockFromProfile(t *testing.T) {
	e := newNATEnv(t)
	profiles := fmt.Sprintf(`address_url: %s
hosts:
  gate1:
    address: %s
    pkcs12: %s
    server_cert: %s
    password_file: %s
    source_ip: auto
    ports: [tcp/2000]
`, e.echo.URL, natServer, e.bundle, e.pki.ServerCert, e.pki.PasswordFile)
	if err := os.MkdirAll(filepath.Join(e.profilesDir, "sknock"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.profilesDir, "sknock", "config.yaml"), []byte(profiles), 0o600); err != nil {
		t.Fatal(err)
	}
	e.waitClosed()
	r := e.run("", "knock", "gate1")
	if r.code != 0 || !verifiedIn.MatchString(r.stdout) {
		t.Fatalf("sknock knock gate1: exit %d, stdout %q, stderr %q; want tcp/2000 open", r.code, r.stdout, r.stderr)
	}
	const msg = "ssh would speak here\n"
	// ssh runs ProxyCommand with %h the host's name (or HostName) and %p
	// the port.
	for _, h := range []string{"gate1", natServer.String()} {
		e.waitClosed()
		r = e.run(msg, "knock", "--connect", h, "tcp/2000")
		if r.code != 0 || r.stdout != msg {
			t.Errorf("ProxyCommand form with %%h=%s: exit %d, stdout %q, stderr %q; want the echo", h, r.code, r.stdout, r.stderr)
		}
	}
	// The real ssh, with the ProxyCommand line of the README and only the
	// profile: it reaches the hidden port and reads the server's banner.
	e.waitClosed()
	proxy := fmt.Sprintf("ProxyCommand=%s knock --connect %%h tcp/%%p", e.sknock)
	r = e.runCommand("", "ssh", "-v", "-F", "/dev/null", "-o", proxy, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-p", "2200", "gate1", "true")
	if !strings.Contains(r.stderr, "remote software version "+sshBanner) {
		t.Errorf("ssh through the ProxyCommand did not read the hidden server's banner: exit %d, stderr %q", r.code, r.stderr)
	}

	// An unknown key is refused with its name.
	if err := os.WriteFile(filepath.Join(e.profilesDir, "sknock", "config.yaml"), []byte(profiles+"    colour: blue\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = e.run("", "knock", "gate1")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown key "colour"`) {
		t.Errorf("unknown key: exit %d, stderr %q; want 2 and the key's name", r.code, r.stderr)
	}
}

// TestIntegrationKnockDualStack: a name with an IPv4 and an IPv6 address
// (the client namespace's /etc/hosts). With IPv6 blocked on the way the
// knock opens the port over IPv4 within the usual timeout, and the
// reverse; --connect splices the connection that was verified; -4 with
// IPv4 blocked fails.
func TestIntegrationKnockDualStack(t *testing.T) {
	e := newKnockEnv(t)
	hostsDir := filepath.Join("/etc/netns", e.net.Client.Name)
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostsDir) })
	hosts := fmt.Sprintf("127.0.0.1 localhost\n%s gate-ds\n%s gate-ds\n", e2e.ServerV6, e2e.ServerV4)
	if err := os.WriteFile(filepath.Join(hostsDir, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	// Blocked on the path: the server namespace's raw table drops the
	// client's packets of one family before anything else sees them
	// (sknockd's rules are in the filter table), so the client meets
	// silence, not a local error.
	block := func(tool string, dst netip.Addr) func() {
		src := e2e.ClientV4
		if dst.Is6() {
			src = e2e.ClientV6
		}
		rule := []string{"PREROUTING", "-s", src.String(), "-d", dst.String(), "-j", "DROP"}
		e.net.Server.MustRun(append([]string{tool, "-t", "raw", "-I"}, rule...)...)
		return func() { e.net.Server.MustRun(append([]string{tool, "-t", "raw", "-D"}, rule...)...) }
	}
	granted := func(from int, src netip.Addr) {
		t.Helper()
		line := e.daemonLine(from)
		if line.String("source") != src.String() {
			t.Errorf("granted to %q, want %s", line.String("source"), src)
		}
	}
	for _, tt := range []struct {
		name          string
		blocked, open netip.Addr
		blockTool     string
		client        netip.Addr
	}{
		{"IPv6 blocked", e2e.ServerV6, e2e.ServerV4, "ip6tables", e2e.ClientV4},
		{"IPv4 blocked", e2e.ServerV4, e2e.ServerV6, "iptables", e2e.ClientV6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e.waitClosed(e2e.AddrPort(tt.open, 2000))
			unblock := block(tt.blockTool, tt.blocked)
			defer unblock()
			from := len(e.daemon.Lines())
			r := e.knock("", "gate-ds", "tcp/2000")
			if r.code != 0 || !strings.Contains(r.stdout, " on "+tt.open.String()) {
				t.Fatalf("exit %d, stdout %q; want tcp/2000 open on %s", r.code, r.stdout, tt.open)
			}
			if r.elapsed > usualTimeout {
				t.Errorf("opened after %s, want within the usual %s", r.elapsed, usualTimeout)
			}
			granted(from, tt.client)
			e.waitClosed(e2e.AddrPort(tt.open, 2000))
			const msg = "over the family that opened\n"
			if r := e.knock(msg, "--connect", "gate-ds", "tcp/2000"); r.code != 0 || r.stdout != msg {
				t.Errorf("--connect: exit %d, stdout %q, stderr %q; want the echo", r.code, r.stdout, r.stderr)
			}
		})
	}
	unblock := block("iptables", e2e.ServerV4)
	defer unblock()
	if r := e.knock("", "-4", "--retries", "0", "--timeout", "300ms", "gate-ds", "tcp/2000"); r.code != 1 {
		t.Errorf("-4 with IPv4 blocked: exit %d, want 1", r.code)
	}
}

// natAttacker is an address of the attacker on the router's public side.
var natAttacker = netip.MustParseAddr("198.18.0.66")

// forgingConn hands stun.Serve every request as if it came from forged,
// and sends the answer to the real sender: a STUN server on the path that
// forges the answer.
type forgingConn struct {
	net.PacketConn
	forged netip.Addr
	mu     sync.Mutex
	last   net.Addr
}

func (c *forgingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(b)
	if err != nil {
		return n, from, err
	}
	c.mu.Lock()
	c.last = from
	c.mu.Unlock()
	return n, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.forged, 40000)), nil
}

func (c *forgingConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.mu.Lock()
	to := c.last
	c.mu.Unlock()
	return c.PacketConn.WriteTo(b, to)
}

// captureKnocks sends the payload of every UDP datagram leaving ns for
// the gatekeeper's knock range (what an attacker on the path records).
func captureKnocks(t *testing.T, ns *netns.NS) <-chan []byte {
	t.Helper()
	const ethPIP = 0x0800
	htons := func(v uint16) uint16 { return v<<8 | v>>8 }
	var fd int
	if err := ns.Do(func() (err error) {
		fd, err = syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM, int(htons(ethPIP)))
		return err
	}); err != nil {
		t.Fatalf("packet socket: %v", err)
	}
	f := os.NewFile(uintptr(fd), "capture")
	t.Cleanup(func() { f.Close() })
	out := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := syscall.Read(fd, buf)
			if err != nil {
				return
			}
			p := buf[:n]
			if n < 28 || p[0]>>4 != 4 || p[9] != syscall.IPPROTO_UDP {
				continue
			}
			ihl := int(p[0]&0x0f) * 4
			dst := netip.AddrFrom4([4]byte(p[16:20]))
			src := netip.AddrFrom4([4]byte(p[12:16]))
			// Seen as it enters the router from the LAN (before NAT).
			if n < ihl+8 || dst != natServer || (src != natClient && src != natWAN) {
				continue
			}
			dport := int(p[ihl+2])<<8 | int(p[ihl+3])
			if dport < 10000 || dport > 60000 || n-ihl-8 < 200 {
				continue
			}
			select {
			case out <- append([]byte(nil), p[ihl+8:]...):
			default:
			}
		}
	}()
	return out
}

// TestIntegrationForgedAddressDiscovery: an attacker on the client's path
// (the router) answers address discovery in place of the real servers,
// naming its own address, records the knock and resends it from that
// address. In the default configuration (the HTTPS address echo; the
// test names its echo because the default one is not reachable here) the
// forged answer fails certificate verification, nothing is knocked and
// nothing is granted. With plain STUN, asked for explicitly, the forged
// answer is taken (after a warning); the gatekeeper refuses the knock as a
// source mismatch and remembers it, so the attacker's copy from the
// address it names is a replay: no grant either way.
func TestIntegrationForgedAddressDiscovery(t *testing.T) {
	e := newNATEnv(t)
	e.router.MustRun("ip", "addr", "add", natAttacker.String()+"/24", "dev", "wan0")
	e.router.MustRun("iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", natAttacker.String(), "-j", "ACCEPT") // not masqueraded
	forger := e2e.ServeAddressEcho(t, e.router, netip.AddrPortFrom(natLAN, natEchoPort), natAttacker)
	_ = forger // its CA is not the client's: the point of the test
	var conn net.PacketConn
	if err := e.router.Do(func() (err error) {
		conn, err = net.ListenPacket("udp4", netip.AddrPortFrom(natLAN, natSTUNPort).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go stun.Serve(&forgingConn{PacketConn: conn, forged: natAttacker})
	t.Cleanup(func() { conn.Close() })
	for _, rule := range [][]string{
		{"-p", "tcp", "-d", natServer.String(), "--dport", fmt.Sprint(natEchoPort), "-j", "DNAT", "--to-destination", netip.AddrPortFrom(natLAN, natEchoPort).String()},
		{"-p", "udp", "-d", natServer.String(), "--dport", fmt.Sprint(natSTUNPort), "-j", "DNAT", "--to-destination", netip.AddrPortFrom(natLAN, natSTUNPort).String()},
	} {
		e.router.MustRun(append([]string{"iptables", "-t", "nat", "-A", "PREROUTING", "-i", "lan0"}, rule...)...)
	}
	captured := captureKnocks(t, e.router)
	e.waitClosed()

	r := e.knock("--source-ip", "auto", "--address-url", e.echo.URL, natServer.String(), "tcp/2000")
	if r.code == 0 || !strings.Contains(r.stderr, "certificate") {
		t.Errorf("a forged HTTPS answer: exit %d, stderr %q; want a failure naming the certificate", r.code, r.stderr)
	}
	select {
	case <-captured:
		t.Error("a knock was sent on a forged HTTPS answer")
	case <-time.After(300 * time.Millisecond):
	}

	from := len(e.daemon.Lines())
	r = e.knock("--source-ip", "auto", "--stun", netip.AddrPortFrom(natServer, natSTUNPort).String(), "--retries", "0", "--timeout", "300ms", natServer.String(), "tcp/2000")
	if r.code == 0 || !strings.Contains(r.stderr, "not authenticated") {
		t.Errorf("a forged STUN answer: exit %d, stderr %q; want a failure and the STUN warning", r.code, r.stderr)
	}
	refused := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" })
	if refused.String("reason") != "source_mismatch" || refused.String("client_ip") != natAttacker.String() {
		t.Errorf("the victim's knock: %v, want source_mismatch naming %s", refused, natAttacker)
	}
	var knock []byte
	select {
	case knock = <-captured:
	case <-time.After(5 * time.Second):
		t.Fatal("no knock captured on the router")
	}
	from = len(e.daemon.Lines())
	if err := e.router.Do(func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(natAttacker, 0)), net.UDPAddrFromAddrPort(netip.AddrPortFrom(natServer, 23456)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(knock)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	resent := e.daemon.WaitLine(from, 5*time.Second, func(l e2e.Line) bool {
		return l.Msg() == "knock" && l.String("source") == natAttacker.String()
	})
	if resent.String("verdict") != "deny" || resent.String("reason") != "replay" {
		t.Errorf("the captured knock resent from %s: %v, want denied as a replay", natAttacker, resent)
	}
	for _, l := range e.daemon.Lines() {
		if l.Msg() == "knock" && l.String("verdict") == "grant" {
			t.Errorf("granted: %v", l)
		}
	}
}
