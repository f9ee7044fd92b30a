//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/packet"
	"sknock/rules"
)

// The services of the server namespace. Every protected port has an echo
// service behind it, so "closed" is the firewall's doing.
const (
	sshPort    = 22   // always allowed, TCP echo
	tcpA       = 2000 // protected TCP echo
	tcpB       = 3000 // protected TCP echo
	udpA       = 8000 // protected UDP echo
	udpB       = 8001 // protected UDP echo
	closedPort = 2999 // unprotected, nothing listens (TCP and UDP)
)

// Time limits of the probes. A dropped SYN is only seen as a timeout, so
// dropTimeout is what a "drop" check costs.
const (
	dropTimeout  = time.Second
	probeTimeout = 2 * time.Second // for answers that should come at once
	logTimeout   = 5 * time.Second // for a knock's log line
)

// sections is the knock and gate part of every config; %s are the policy
// and the open duration.
const sections = `knock:
  ports: "40000:40100"
  queue: 100
gate:
  queue: 101
  protect: [tcp/2000, tcp/3000, udp/8000, udp/8001]
  always_allow: [tcp/22]
  policy: %s
  open_duration: %s
`

// env is one server with its services, CA, clients and running daemon.
type env struct {
	net    *e2e.Net
	pki    *e2e.PKI
	daemon *e2e.Daemon
	policy string

	alice *e2e.Client // every protected port
	bob   *e2e.Client // tcp/3000 only
	carol *e2e.Client // TCP ports; revoked by a test
	eve   *e2e.Client // every port, but from a foreign CA
}

// requireTools skips (fails under SKNOCK_E2E=1) without root or the tools.
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range append([]string{"ip", "iptables", "ip6tables", "iptables-save", "ip6tables-save"}, tools...) {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" not installed")
	}
}

func newEnv(t *testing.T, policy string, openDuration time.Duration) *env {
	t.Helper()
	e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: policy}
	e.alice = e.pki.Client(t, "alice", "tcp/2000,tcp/3000,udp/8000,udp/8001")
	e.bob = e.pki.Client(t, "bob", "tcp/3000")
	e.carol = e.pki.Client(t, "carol", "tcp/2000,tcp/3000")
	e.eve = e2e.NewPKI(t).Client(t, "eve", "tcp/2000,tcp/3000,udp/8000,udp/8001")
	for _, p := range []int{sshPort, tcpA, tcpB} {
		e2e.ServeTCPEcho(t, e.net.Server, fmt.Sprintf(":%d", p))
	}
	for _, p := range []int{udpA, udpB} {
		e2e.ServeUDPEcho(t, e.net.Server, fmt.Sprintf(":%d", p))
	}
	e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(fmt.Sprintf(sections, policy, openDuration)))
	return e
}

// peer is a client namespace and one of its addresses.
type peer struct {
	name string
	ns   *netns.NS
	addr netip.Addr
}

func (e *env) client(v6 bool) peer {
	if v6 {
		return peer{"client v6", e.net.Client, e2e.ClientV6}
	}
	return peer{"client v4", e.net.Client, e2e.ClientV4}
}

func (e *env) mallory(v6 bool) peer {
	if v6 {
		return peer{"mallory v6", e.net.Mallory, e2e.MalloryV6}
	}
	return peer{"mallory v4", e.net.Mallory, e2e.MalloryV4}
}

// probe tries proto/port on the server from p: nil when the echo came
// back, else the error.
func probe(p peer, proto packet.Proto, port uint16, timeout time.Duration) error {
	addr := e2e.AddrPort(e2e.ServerAddr(p.addr), port)
	if proto == packet.UDP {
		return e2e.UDPEcho(p.ns, addr, timeout)
	}
	return e2e.TCPEcho(p.ns, addr, timeout)
}

// wantOpen fails t unless p reaches proto/port.
func (e *env) wantOpen(t *testing.T, p peer, proto packet.Proto, port uint16) {
	t.Helper()
	if err := probe(p, proto, port, probeTimeout); err != nil {
		t.Errorf("%s -> %s/%d: %v, want the echo", p.name, proto, port, err)
	}
}

// wantClosed fails t unless proto/port is hidden from p the way the policy
// says: refused at once under reject, silent under drop.
func (e *env) wantClosed(t *testing.T, p peer, proto packet.Proto, port uint16) {
	t.Helper()
	err := probe(p, proto, port, dropTimeout)
	switch {
	case e.policy == "reject" && !e2e.IsRefused(err):
		t.Errorf("%s -> %s/%d: got %v, want connection refused (policy reject)", p.name, proto, port, err)
	case e.policy == "drop" && !e2e.IsTimeout(err):
		t.Errorf("%s -> %s/%d: got %v, want a timeout (policy drop)", p.name, proto, port, err)
	}
}

// knock sends c's knock for proto/port from p, claiming to be embed (p's
// own address when invalid), and returns the datagram and the daemon's
// log line for it. When the line is there the decision is made: a grant is
// in the table before it is logged.
func (e *env) knock(t *testing.T, c *e2e.Client, p peer, embed netip.Addr, proto packet.Proto, port uint16) ([]byte, e2e.Line) {
	t.Helper()
	if !embed.IsValid() {
		embed = p.addr
	}
	datagram := c.Seal(t, e.pki.ServerKey, proto, port, embed)
	return datagram, e.send(t, p, datagram)
}

// send sends a knock datagram from p and waits for its log line.
func (e *env) send(t *testing.T, p peer, datagram []byte) e2e.Line {
	t.Helper()
	from := len(e.daemon.Lines())
	if err := e2e.SendUDP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), e2e.KnockPort), datagram); err != nil {
		t.Fatalf("send knock from %s: %v", p.name, err)
	}
	return e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool {
		return l.Msg() == "knock" && l.String("source") == p.addr.String()
	})
}

// checkLine compares the fields of want with l's.
func checkLine(t *testing.T, l e2e.Line, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for k := range want {
		got[k] = l.String(k)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("knock log line (-want +got):\n%s\nline: %v", diff, l)
	}
}

// TestIntegrationHiddenPorts checks what a client sees before any knock:
// under drop a protected port times out, under reject it is refused at
// once and looks exactly like a closed port (to nmap too), and the
// always-allowed port works under both.
func TestIntegrationHiddenPorts(t *testing.T) {
	requireTools(t, "nmap")
	for _, policy := range []string{"drop", "reject"} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, policy, time.Minute)
			for _, v6 := range []bool{false, true} {
				c := e.client(v6)
				e.wantOpen(t, c, packet.TCP, sshPort)
				e.wantClosed(t, c, packet.TCP, tcpA)
				e.wantClosed(t, c, packet.UDP, udpA)
				// A closed port is refused whatever the policy.
				for _, proto := range []packet.Proto{packet.TCP, packet.UDP} {
					if err := probe(c, proto, closedPort, probeTimeout); !e2e.IsRefused(err) {
						t.Errorf("%s -> %s/%d (closed, unprotected): %v, want connection refused", c.name, proto, closedPort, err)
					}
				}
			}
			if policy == "reject" {
				for _, target := range []netip.Addr{e2e.ServerV4, e2e.ServerV6} {
					got := nmapStates(t, e.net.Client, target, tcpA, closedPort)
					want := map[string]string{fmt.Sprint(tcpA): "closed", fmt.Sprint(closedPort): "closed"}
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("nmap -sS %s: port states (-want +got):\n%s", target, diff)
					}
				}
			}
			// And a knock opens the port under either policy.
			c := e.client(false)
			_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
			checkLine(t, line, map[string]string{"verdict": "grant"})
			e.wantOpen(t, c, packet.TCP, tcpA)
		})
	}
}

var nmapPortLine = regexp.MustCompile(`(?m)^(\d+)/tcp\s+(\S+)`)

// nmapStates SYN-scans ports of target from ns and returns port → state.
func nmapStates(t *testing.T, ns *netns.NS, target netip.Addr, ports ...int) map[string]string {
	t.Helper()
	var list []string
	for _, p := range ports {
		list = append(list, fmt.Sprint(p))
	}
	args := []string{"nmap", "-n", "-Pn", "-sS"}
	if target.Is6() {
		args = append(args, "-6")
	}
	args = append(args, "-p", strings.Join(list, ","), target.String())
	out := ns.MustRun(args...)
	states := map[string]string{}
	for _, m := range nmapPortLine.FindAllStringSubmatch(out, -1) {
		states[m[1]] = m[2]
	}
	if len(states) != len(ports) {
		t.Logf("nmap output:\n%s", out)
	}
	return states
}

// TestIntegrationKnock runs one daemon (policy reject, so a closed port
// answers at once) through grants and refused knocks.
func TestIntegrationKnock(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "reject", time.Minute)

	// Each grant opens exactly its port for exactly its source. The
	// ports differ by family so that no case opens what an earlier one
	// checked was closed.
	opens := []struct {
		name        string
		v6          bool
		proto       packet.Proto
		port, other uint16
	}{
		{"tcp v4", false, packet.TCP, tcpA, tcpB},
		{"tcp v6", true, packet.TCP, tcpB, tcpA},
		{"udp v4", false, packet.UDP, udpA, udpB},
		{"udp v6", true, packet.UDP, udpB, udpA},
	}
	for _, tc := range opens {
		t.Run("opens/"+tc.name, func(t *testing.T) {
			c := e.client(tc.v6)
			e.wantClosed(t, c, tc.proto, tc.port)
			_, line := e.knock(t, e.alice, c, netip.Addr{}, tc.proto, tc.port)
			checkLine(t, line, map[string]string{
				"verdict": "grant", "reason": "", "subject": "CN=alice", "serial": e.alice.Serial(),
				"proto": tc.proto.String(), "port": fmt.Sprint(tc.port), "client_ip": c.addr.String(),
			})
			e.wantOpen(t, c, tc.proto, tc.port)
			e.wantClosed(t, e.mallory(tc.v6), tc.proto, tc.port)
			e.wantClosed(t, e.client(!tc.v6), tc.proto, tc.port)
			e.wantClosed(t, c, tc.proto, tc.other)
		})
	}

	// Knocks that must change nothing, all from mallory, whose ports
	// are all closed. Each names the source, port and log fields.
	refused := []struct {
		name   string
		client *e2e.Client
		from   peer
		embed  netip.Addr
		proto  packet.Proto
		port   uint16
		want   map[string]string
	}{
		{
			name: "unauthorised port", client: e.bob, from: e.mallory(false), proto: packet.TCP, port: tcpA,
			want: map[string]string{"verdict": "deny", "reason": "not_authorized", "subject": "CN=bob", "serial": e.bob.Serial()},
		},
		{
			name: "foreign CA", client: e.eve, from: e.mallory(false), proto: packet.TCP, port: tcpA,
			want: map[string]string{"verdict": "deny", "reason": "untrusted_certificate"},
		},
		{
			name: "foreign CA v6", client: e.eve, from: e.mallory(true), proto: packet.UDP, port: udpA,
			want: map[string]string{"verdict": "deny", "reason": "untrusted_certificate"},
		},
		{
			// Embeds the client's address: neither it nor mallory gets tcp/3000.
			name: "embedded address is not the source", client: e.alice, from: e.mallory(false), embed: e2e.ClientV4,
			proto: packet.TCP, port: tcpB,
			want: map[string]string{"verdict": "deny", "reason": "source_mismatch", "subject": "CN=alice", "client_ip": e2e.ClientV4.String()},
		},
	}
	for _, tc := range refused {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			_, line := e.knock(t, tc.client, tc.from, tc.embed, tc.proto, tc.port)
			checkLine(t, line, tc.want)
			e.wantClosed(t, tc.from, tc.proto, tc.port)
			if tc.embed.IsValid() {
				e.wantClosed(t, e.client(false), tc.proto, tc.port)
			}
		})
	}

	t.Run("refused/revoked after SIGHUP", func(t *testing.T) {
		// Before the revocation carol's knock works (mallory v6, tcp/2000).
		_, line := e.knock(t, e.carol, e.mallory(true), netip.Addr{}, packet.TCP, tcpA)
		checkLine(t, line, map[string]string{"verdict": "grant", "subject": "CN=carol"})
		e.wantOpen(t, e.mallory(true), packet.TCP, tcpA)

		e.pki.Revoke(t, "carol")
		from := len(e.daemon.Lines())
		e.daemon.Signal(syscall.SIGHUP)
		reloaded := e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool {
			return strings.HasPrefix(l.Msg(), "trust reloaded")
		})
		if got := reloaded.String("crl_revoked"); got != "1" {
			t.Errorf("after SIGHUP: crl_revoked = %s, want 1; line: %v", got, reloaded)
		}

		_, line = e.knock(t, e.carol, e.mallory(false), netip.Addr{}, packet.TCP, tcpA)
		// The certificate is not trusted, so its subject is not logged;
		// the serial is in the detail.
		checkLine(t, line, map[string]string{"verdict": "deny", "reason": "revoked", "proto": "tcp", "port": fmt.Sprint(tcpA)})
		if !strings.Contains(line.String("detail"), e.carol.Serial()) {
			t.Errorf("revoked knock: detail %q does not name serial %s", line.String("detail"), e.carol.Serial())
		}
		e.wantClosed(t, e.mallory(false), packet.TCP, tcpA)
	})

	// Under reject every knock, valid or not, is answered once read as a
	// closed port answers: one ICMP port unreachable each (issue 12, C).
	t.Run("knocks are answered as a closed port", func(t *testing.T) {
		v4Before, v6Before := e2e.DestUnreachSent(t, e.net.Server)
		for _, v6 := range []bool{false, true} {
			m := e.mallory(v6)
			target := e2e.AddrPort(e2e.ServerAddr(m.addr), e2e.KnockPort+7)
			datagrams := [][]byte{
				e.alice.Seal(t, e.pki.ServerKey, packet.UDP, udpA, m.addr), // granted
				e.eve.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, m.addr),
				e.alice.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, e2e.ClientV4), // source mismatch
				make([]byte, 400), // long enough for the knock queue, not a knock
			}
			for _, d := range datagrams {
				// A connected socket reports an ICMP error as ECONNREFUSED.
				c, err := e2e.DialUDP(m.ns, target)
				if err != nil {
					t.Fatal(err)
				}
				from := len(e.daemon.Lines())
				if _, err := c.Write(d); err != nil {
					t.Fatal(err)
				}
				e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool {
					return l.Msg() == "knock" && l.String("source") == m.addr.String()
				})
				c.SetReadDeadline(time.Now().Add(probeTimeout))
				if _, err := c.Read(make([]byte, 64)); !e2e.IsRefused(err) {
					t.Errorf("%s: knock of %d bytes got %v, want connection refused (policy reject)", m.name, len(d), err)
				}
				c.Close()
			}
		}
		v4After, v6After := e2e.DestUnreachSent(t, e.net.Server)
		if n := uint64(4); v4After != v4Before+n || v6After != v6Before+n {
			t.Errorf("destination unreachables sent during knocks: IPv4 %d -> %d, IPv6 %d -> %d; want %d each",
				v4Before, v4After, v6Before, v6After, n)
		}
		// The counters do count: a datagram to a closed port draws one.
		if err := e2e.UDPEcho(e.net.Mallory, e2e.AddrPort(e2e.ServerV4, closedPort), probeTimeout); !e2e.IsRefused(err) {
			t.Errorf("udp to closed port %d: %v, want connection refused", closedPort, err)
		}
		if v4, _ := e2e.DestUnreachSent(t, e.net.Server); v4 != v4After+1 {
			t.Errorf("OutDestUnreachs after a datagram to a closed port: %d, want %d", v4, v4After+1)
		}
	})
}

// TestIntegrationExpiry shows that an established connection outlives its
// grant while new ones are refused after it, and that the same knock sent
// again after expiry opens nothing.
func TestIntegrationExpiry(t *testing.T) {
	requireTools(t)
	const openFor = 2 * time.Second
	e := newEnv(t, "reject", openFor)
	c := e.client(false)
	addr := e2e.AddrPort(e2e.ServerV4, tcpA)

	datagram, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant", "open_seconds": "2"})
	granted := time.Now()
	conn, err := e2e.DialTCP(c.ns, addr, probeTimeout)
	if err != nil {
		t.Fatalf("connect after knock: %v", err)
	}
	defer conn.Close()
	if err := e2e.Echo(conn, []byte("before expiry\n"), probeTimeout); err != nil {
		t.Fatalf("echo before expiry: %v", err)
	}

	// Poll with new connections until the grant has expired.
	deadline := granted.Add(openFor + 3*time.Second)
	for {
		err := e2e.TCPEcho(c.ns, addr, probeTimeout)
		if e2e.IsRefused(err) {
			break
		}
		if err != nil {
			t.Fatalf("new connection while waiting for expiry: %v, want the echo or connection refused", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("new connections still accepted %v after a grant of %v", time.Since(granted), openFor)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if elapsed := time.Since(granted); elapsed < openFor-500*time.Millisecond {
		t.Errorf("grant ended after %v, want about %v", elapsed, openFor)
	}
	if err := e2e.Echo(conn, []byte("after expiry\n"), probeTimeout); err != nil {
		t.Errorf("established connection after its grant expired: %v, want the echo", err)
	}

	// Within the timestamp tolerance (7 s) the replay cache catches it.
	line = e.send(t, c, datagram)
	checkLine(t, line, map[string]string{"verdict": "deny", "reason": "replay"})
	e.wantClosed(t, c, packet.TCP, tcpA)
}

// checkOneJump checks that mangle PREROUTING, filter INPUT and filter
// FORWARD each jump to the chain exactly once, and mangle POSTROUTING
// holds the backstop exactly once, in both families of save
// (IptablesSave).
func checkOneJump(t *testing.T, save string) {
	t.Helper()
	// iptables quotes the label, and names it when connlabel.conf does.
	save = strings.NewReplacer(`--label "`+rules.LabelName+`"`, "--label 127", `--label "127"`, "--label 127").Replace(save)
	for _, family := range strings.Split(save, "## ")[1:] {
		for _, jump := range []string{
			"-A PREROUTING -j SKNOCK\n",
			"-A POSTROUTING -m conntrack --ctstate DNAT --ctdir ORIGINAL -m connlabel --label 127 -j DROP\n",
			"-A INPUT -j SKNOCK\n",
			"-A FORWARD -m conntrack --ctstate DNAT -j SKNOCK\n",
		} {
			if n := strings.Count(family, jump); n != 1 {
				t.Errorf("%d jumps %q, want 1:\n%s", n, strings.TrimSpace(jump), family)
			}
		}
	}
}

// TestIntegrationLifecycle covers a second instance and --remove-rules
// (both refused while sknockd runs), kill -9 (ports stay closed), a
// restart after the crash (no duplicate rules), SIGTERM (the rules stay,
// ports stay closed) and --remove-rules after it (nothing left, ports
// reachable).
func TestIntegrationLifecycle(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	c := e.client(false)
	applied := e2e.IptablesSave(t, e.net.Server)
	checkOneJump(t, applied)

	t.Run("second instance refused", func(t *testing.T) {
		out, code := e2e.RunSknockd(t, e.net.Server, 20*time.Second, "--config", e.daemon.Config)
		if code == 0 || !strings.Contains(out, "already") {
			t.Errorf("second sknockd on the same queues: exit %d, output:\n%s\nwant a non-zero exit and a message saying one is already running", code, out)
		}
		if diff := cmp.Diff(applied, e2e.IptablesSave(t, e.net.Server)); diff != "" {
			t.Errorf("the refused instance changed the rules (-before +after):\n%s", diff)
		}
		if exited, code := e.daemon.Exited(); exited {
			t.Fatalf("the first instance exited (status %d)", code)
		}
	})

	t.Run("--remove-rules refused while running", func(t *testing.T) {
		out, code := e2e.RunSknockd(t, e.net.Server, 20*time.Second, "--config", e.daemon.Config, "--remove-rules")
		if code != 1 || !strings.Contains(out, "running") {
			t.Errorf("sknockd --remove-rules with sknockd running: exit %d, output:\n%s\nwant exit 1 and a message saying one is running", code, out)
		}
		if diff := cmp.Diff(applied, e2e.IptablesSave(t, e.net.Server)); diff != "" {
			t.Errorf("the refused --remove-rules changed the rules (-before +after):\n%s", diff)
		}
		if exited, code := e.daemon.Exited(); exited {
			t.Fatalf("sknockd exited (status %d)", code)
		}
	})

	t.Run("kill -9 leaves ports closed", func(t *testing.T) {
		e.daemon.Kill9()
		if diff := cmp.Diff(applied, e2e.IptablesSave(t, e.net.Server)); diff != "" {
			t.Errorf("rules changed by kill -9 (-before +after):\n%s", diff)
		}
		e.wantClosed(t, c, packet.TCP, tcpA)
		e.wantClosed(t, e.client(true), packet.TCP, tcpB)
		e.wantOpen(t, c, packet.TCP, sshPort)
	})

	t.Run("restart after crash", func(t *testing.T) {
		e.daemon.Restart()
		restarted := e2e.IptablesSave(t, e.net.Server)
		checkOneJump(t, restarted)
		if diff := cmp.Diff(applied, restarted); diff != "" {
			t.Errorf("rules after restart differ (-first start +restart):\n%s", diff)
		}
		_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
		checkLine(t, line, map[string]string{"verdict": "grant"})
		e.wantOpen(t, c, packet.TCP, tcpA)
	})

	t.Run("SIGTERM keeps the rules", func(t *testing.T) {
		if code := e.daemon.Stop(); code != 0 {
			t.Errorf("exit status after SIGTERM: %d, want 0", code)
		}
		var last e2e.Line
		if lines := e.daemon.Lines(); len(lines) > 0 {
			last = lines[len(lines)-1]
		}
		if last.Msg() != "sknockd stopped" || last.String("rules") != "kept" {
			t.Errorf("last log line after SIGTERM: %v, want msg \"sknockd stopped\" with rules \"kept\"", last)
		}
		if diff := cmp.Diff(applied, e2e.IptablesSave(t, e.net.Server)); diff != "" {
			t.Errorf("rules changed by SIGTERM (-before +after):\n%s", diff)
		}
		e.wantClosed(t, c, packet.TCP, tcpA) // granted before the stop
		e.wantClosed(t, e.client(true), packet.TCP, tcpB)
		e.wantOpen(t, c, packet.TCP, sshPort)
	})

	t.Run("--remove-rules removes everything", func(t *testing.T) {
		for i := range 2 { // the second run finds nothing to remove
			out, code := e2e.RunSknockd(t, e.net.Server, 20*time.Second, "--config", e.daemon.Config, "--remove-rules")
			if code != 0 {
				t.Errorf("sknockd --remove-rules (run %d): exit %d, want 0:\n%s", i+1, code, out)
			}
		}
		after := e2e.IptablesSave(t, e.net.Server)
		for _, leftover := range []string{"SKNOCK", "NFQUEUE", "REJECT"} {
			if strings.Contains(after, leftover) {
				t.Errorf("%s left in the rules after --remove-rules:\n%s", leftover, after)
			}
		}
		e.wantOpen(t, c, packet.TCP, tcpA)
		e.wantOpen(t, e.mallory(true), packet.TCP, tcpB)
	})
}

// TestIntegrationBadConfig checks that a bad config is refused naming the
// key, with --check and without, and that nothing is applied.
func TestIntegrationBadConfig(t *testing.T) {
	requireTools(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t)
	good := fmt.Sprintf(sections, "drop", "15s")
	tests := []struct {
		name string
		give string // the config
		want string // in the message
	}{
		{"bad policy", strings.Replace(good, "policy: drop", "policy: maybe", 1), "gate.policy"},
		{"unknown key", good + "  colour: blue\n", "colour"},
		{"bad duration", strings.Replace(good, "open_duration: 15s", "open_duration: soon", 1), "gate.open_duration"},
		{"bad port", strings.Replace(good, "tcp/3000", "tcp/70000", 1), "gate.protect"},
		{"missing bundle", strings.Replace(p.Config(good), p.ServerPKCS12, p.ServerPKCS12+".missing", 1), "server.pkcs12"},
	}
	before := e2e.IptablesSave(t, n.Server)
	dir := t.TempDir()
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			config := tc.give
			if !strings.Contains(config, "server:") {
				config = p.Config(config)
			}
			path := fmt.Sprintf("%s/bad%d.yaml", dir, i)
			writeIntegrationFile(t, path, config)
			for _, args := range [][]string{{"--config", path, "--check"}, {"--config", path}} {
				out, code := e2e.RunSknockd(t, n.Server, 20*time.Second, args...)
				if code != 2 || !strings.Contains(out, tc.want) {
					t.Errorf("sknockd %s: exit %d, output:\n%s\nwant exit 2 and a message naming %q", strings.Join(args, " "), code, out, tc.want)
				}
			}
			if diff := cmp.Diff(before, e2e.IptablesSave(t, n.Server)); diff != "" {
				t.Errorf("a refused config changed the rules (-before +after):\n%s", diff)
			}
		})
	}
	t.Run("good config passes --check", func(t *testing.T) {
		path := dir + "/good.yaml"
		writeIntegrationFile(t, path, p.Config(good))
		if out, code := e2e.RunSknockd(t, n.Server, 20*time.Second, "--config", path, "--check"); code != 0 {
			t.Errorf("sknockd --check on a good config: exit %d:\n%s", code, out)
		}
	})
}

func writeIntegrationFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestIntegrationBurst sends bursts of simultaneous connections from a
// granted and an ungranted source at once, so the gate queue holds many
// packets with mixed verdicts and the reader answers them in batches: every
// granted connection must be accepted and every other one rejected, none
// crossing over.
func TestIntegrationBurst(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "reject", time.Minute)
	_, line := e.knock(t, e.alice, e.client(false), netip.Addr{}, packet.TCP, tcpA)
	checkLine(t, line, map[string]string{"verdict": "grant"})

	const n = 64
	type result struct {
		granted bool
		err     error
	}
	results := make(chan result, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n {
		p := e.client(false)
		if i%2 == 1 {
			p = e.mallory(false)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results <- result{granted: p.ns == e.net.Client, err: probe(p, packet.TCP, tcpA, probeTimeout)}
		}()
	}
	wg.Wait()
	close(results)
	var opened, refused int
	for r := range results {
		switch {
		case r.granted && r.err != nil:
			t.Errorf("granted client's connection failed: %v", r.err)
		case !r.granted && !e2e.IsRefused(r.err):
			t.Errorf("ungranted connection: %v, want connection refused", r.err)
		case r.granted:
			opened++
		default:
			refused++
		}
	}
	if opened != n || refused != n {
		t.Errorf("%d opened and %d refused, want %d each", opened, refused, n)
	}
}

// TestIntegrationConnectRightAfterKnock sends knocks and connects at
// once, as a client does that does not wait for the grant. A SYN that
// reaches the gate while its knock is being decided is held and accepted
// when the grant lands; without holding it would be dropped (policy drop)
// and resent by TCP only after a second. Which reader runs first depends
// on scheduling, so the test makes 15 attempts (two namespaces, both
// families, four ports) and wants
// at least one held packet, every held one open within 900 ms, every TCP
// connection open within 3 s, and no hold timing out.
func TestIntegrationConnectRightAfterKnock(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	// A first knock, waited for, brings the daemon's knock path out of its
	// cold start.
	_, line := e.knock(t, e.alice, e.mallory(true), netip.Addr{}, packet.UDP, udpB)
	checkLine(t, line, map[string]string{"verdict": "grant"})
	type target struct {
		proto packet.Proto
		port  uint16
	}
	targets := []target{{packet.TCP, tcpA}, {packet.TCP, tcpB}, {packet.UDP, udpA}, {packet.UDP, udpB}}
	attempts, fast := 0, 0
	for _, p := range []peer{e.client(false), e.client(true), e.mallory(false), e.mallory(true)} {
		for _, c := range targets {
			if p.name == "mallory v6" && c.proto == packet.UDP && c.port == udpB {
				continue // the warm-up knock's grant
			}
			// The knock rate limit (20/s per address, per /64 for IPv6,
			// which both namespaces share) must not drop any.
			time.Sleep(60 * time.Millisecond)
			datagram := e.alice.Seal(t, e.pki.ServerKey, c.proto, c.port, p.addr)
			if err := e2e.SendUDP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), e2e.KnockPort), datagram); err != nil {
				t.Fatalf("send knock from %s: %v", p.name, err)
			}
			attempts++
			start := time.Now()
			if err := probe(p, c.proto, c.port, 3*time.Second); err != nil {
				// A UDP datagram that beat its knock to the gate is
				// dropped and not resent; TCP resends a dropped SYN.
				if c.proto == packet.TCP {
					t.Errorf("%s %s/%d after its knock: %v, want it open", p.name, c.proto, c.port, err)
				}
				continue
			}
			if time.Since(start) < 900*time.Millisecond {
				fast++
			}
		}
	}
	from := len(e.daemon.Lines())
	e.daemon.Signal(syscall.SIGUSR1)
	l := e.daemon.WaitLine(from, logTimeout, func(l e2e.Line) bool { return l.Msg() == "counters" })
	held, err := strconv.Atoi(l.String("gate_held"))
	if err != nil {
		t.Fatalf("counters line without gate_held: %v", l)
	}
	t.Logf("%d attempts: %d opened within 900 ms, %d packets held", attempts, fast, held)
	switch {
	case held == 0:
		t.Errorf("no packet held in %d attempts", attempts)
	case fast < held:
		t.Errorf("%d packets held but only %d attempts opened within 900 ms", held, fast)
	}
	if l.String("gate_hold_timeouts") != "0" {
		t.Errorf("gate_hold_timeouts = %s, want 0: every hold ends with its knock's decision", l.String("gate_hold_timeouts"))
	}
}
