//go:build linux

package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/packet"
)

// The enforcement matrix (issue 19): every decision of sknock holds where
// it is made, whatever other tools' rules run before or after its jumps.
// Rows are other tools' rule sets, installed in a running server
// namespace and removed after; columns are the policy (drop, reject: one
// daemon each, in parallel) and the family; the cells are what must hold.

// Ports of the matrix besides the shared ones (tcpA, udpA, tcpB, sshPort,
// closedPort): tcpB is protected and has the administrator's DROP in
// mangle PREROUTING; openPort is unprotected with a service.
const openPort = 2500

// adminDrop is the administrator's own rule, in both families for every
// row: a later mangle rule dropping SYNs to the protected tcp/3000. It
// must win over a grant.
const adminDrop = "-t mangle -A PREROUTING -p tcp --dport 3000 --syn -j DROP"

// otherTool is one row: shell commands that add and remove its rules in
// the server namespace ($ipt is iptables, then ip6tables, where a command
// is run for both), and whether it puts rules above sknock's jumps (the
// keeper then puts its jumps back on top, which the row waits for).
type otherTool struct {
	name     string
	add, del string
	above    bool
}

// forBoth runs each line of cmds with $ipt set to iptables and to
// ip6tables.
func forBoth(cmds ...string) string {
	return "for ipt in iptables ip6tables; do\n\t$ipt -w " + strings.Join(cmds, "\n\t$ipt -w ") + "\ndone\n"
}

var otherTools = []otherTool{
	{name: "restore-mark after the jump",
		add: forBoth("-t mangle -A PREROUTING -j CONNMARK --restore-mark"),
		del: forBoth("-t mangle -D PREROUTING -j CONNMARK --restore-mark")},
	{name: "restore-mark above the jump", above: true,
		add: forBoth("-t mangle -I PREROUTING 1 -j CONNMARK --restore-mark"),
		del: forBoth("-t mangle -D PREROUTING -j CONNMARK --restore-mark")},
	{name: "save-mark",
		add: forBoth("-t mangle -A PREROUTING -j CONNMARK --save-mark"),
		del: forBoth("-t mangle -D PREROUTING -j CONNMARK --save-mark")},
	{name: "mark 0x1",
		add: forBoth("-t mangle -A PREROUTING -j MARK --set-mark 0x1"),
		del: forBoth("-t mangle -D PREROUTING -j MARK --set-mark 0x1")},
	{name: "mark 0x10 in mangle INPUT",
		add: forBoth("-t mangle -A INPUT -j MARK --set-mark 0x10"),
		del: forBoth("-t mangle -D INPUT -j MARK --set-mark 0x10")},
	{name: "connmark 0x2 on all TCP",
		add: forBoth("-t mangle -A PREROUTING -p tcp -j CONNMARK --set-xmark 0x2/0x2"),
		del: forBoth("-t mangle -D PREROUTING -p tcp -j CONNMARK --set-xmark 0x2/0x2")},
	// The administrator's DROP alone (it is in every row).
	{name: "later syn DROP on a protected port"},
	// wg-quick's full tunnel (fwmark 51820): its iptables form, inserted
	// first as wg-quick does.
	{name: "wg-quick iptables", above: true,
		add: forBoth("-t mangle -I POSTROUTING -m mark --mark 0xca6c -p udp -j CONNMARK --save-mark",
			"-t mangle -I PREROUTING -p udp -j CONNMARK --restore-mark"),
		del: forBoth("-t mangle -D POSTROUTING -m mark --mark 0xca6c -p udp -j CONNMARK --save-mark",
			"-t mangle -D PREROUTING -p udp -j CONNMARK --restore-mark")},
	// Its native nft form, which iptables-save cannot see, on every
	// packet rather than only UDP.
	{name: "wg-quick nft",
		add: `nft -f - <<'EOF'
table inet sknocktest {
	chain premangle {
		type filter hook prerouting priority -150; policy accept;
		meta mark set ct mark
	}
	chain postmangle {
		type filter hook postrouting priority -150; policy accept;
		meta mark 0xca6c ct mark set meta mark
	}
}
EOF
`,
		del: "nft delete table inet sknocktest\n"},
	// Docker's chains and jumps (without containers, which the
	// containers tests run): its FORWARD jump goes first.
	{name: "docker", above: true,
		add: forBoth("-N DOCKER", "-N DOCKER-USER", "-A DOCKER-USER -j RETURN", "-I FORWARD 1 -j DOCKER-USER", "-A FORWARD -j DOCKER",
			"-t nat -N DOCKER", "-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER", "-t nat -A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER") +
			"iptables -w -t nat -A POSTROUTING -s 198.19.0.0/16 ! -o docker0 -j MASQUERADE\n",
		del: "iptables -w -t nat -D POSTROUTING -s 198.19.0.0/16 ! -o docker0 -j MASQUERADE\n" +
			forBoth("-D FORWARD -j DOCKER-USER", "-D FORWARD -j DOCKER", "-F DOCKER-USER", "-X DOCKER-USER", "-X DOCKER",
				"-t nat -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER", "-t nat -D OUTPUT -m addrtype --dst-type LOCAL -j DOCKER", "-t nat -X DOCKER")},
}

// matrixEnv is newEnv plus the unprotected service and the
// administrator's DROP.
func matrixEnv(t *testing.T, policy string) *env {
	e := newEnv(t, policy, time.Minute)
	e2e.ServeTCPEcho(t, e.net.Server, fmt.Sprintf(":%d", openPort))
	runScript(t, e.net.Server, forBoth(adminDrop))
	return e
}

// runScript runs a shell script in ns and fails t when it fails.
func runScript(t *testing.T, ns *netns.NS, script string) {
	t.Helper()
	if out, err := ns.Run("sh", "-ec", script); err != nil {
		t.Fatalf("in %s: %v\n%s\nscript:\n%s", ns.Name, err, out, script)
	}
}

// waitJumpsFirst waits until sknock's jumps are their chains' first rules
// again in both families (the keeper restores them within a second).
func waitJumpsFirst(t *testing.T, ns *netns.NS) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok := true
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, h := range [][2]string{{"mangle", "PREROUTING"}, {"filter", "INPUT"}, {"filter", "FORWARD"}} {
				out, _ := ns.Run(fam, "-w", "-t", h[0], "-S", h[1])
				first := ""
				for _, l := range strings.Split(out, "\n") {
					if strings.HasPrefix(l, "-A ") {
						first = l
						break
					}
				}
				ok = ok && strings.HasSuffix(first, "-j SKNOCK")
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sknock's jumps not first again 5 s after the other tool's rules:\n%s", e2e.IptablesSave(t, ns))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// probeWant is one probe of a cell and what it must get.
type probeWant struct {
	cell  string
	p     peer
	proto packet.Proto
	port  uint16
	want  string // "open", "hidden" (as the policy hides), "refused", "silent"
}

// check runs every probe at once (a silent one costs dropTimeout) and
// reports each failure under its cell's name.
func (e *env) check(t *testing.T, probes []probeWant) {
	t.Helper()
	errs := make([]error, len(probes))
	var wg sync.WaitGroup
	for i, pw := range probes {
		wg.Go(func() {
			timeout := probeTimeout
			if pw.want != "open" && pw.want != "refused" {
				timeout = dropTimeout
			}
			errs[i] = probe(pw.p, pw.proto, pw.port, timeout)
		})
	}
	wg.Wait()
	for i, pw := range probes {
		want := pw.want
		if want == "hidden" {
			want = map[string]string{"drop": "silent", "reject": "refused"}[e.policy]
		}
		err := errs[i]
		ok := map[string]bool{"open": err == nil, "refused": e2e.IsRefused(err), "silent": e2e.IsTimeout(err)}[want]
		if !ok {
			t.Errorf("%s: %s -> %s/%d: %v, want %s", pw.cell, pw.p.name, pw.proto, pw.port, err, want)
		}
	}
}

// talk holds a connection from p to tcp/port, talking every quarter
// second, and returns when it stopped.
func talk(t *testing.T, p peer, port uint16) <-chan time.Time {
	t.Helper()
	conn, err := e2e.DialTCP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), port), probeTimeout)
	if err != nil {
		t.Errorf("granted: %s: connect to tcp/%d: %v", p.name, port, err)
		return nil
	}
	t.Cleanup(func() { conn.Close() })
	done := make(chan time.Time, 1)
	go func() {
		r := bufio.NewReader(conn)
		for range 100 {
			conn.SetDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write([]byte("ping\n")); err != nil {
				break
			}
			if _, err := r.ReadString('\n'); err != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		done <- time.Now()
	}()
	return done
}

// cells checks one column of one row: hidden ports stay hidden, granted
// ones open (and the administrator's DROP wins over a grant), tcp/22 and
// unprotected ports are untouched, and revocation resets a live
// connection within 2 s.
func (e *env) cells(t *testing.T, v6 bool) {
	alice, mallory := e.client(v6), e.mallory(v6)
	for _, k := range []struct {
		proto packet.Proto
		port  uint16
	}{{packet.TCP, tcpA}, {packet.UDP, udpA}, {packet.TCP, tcpB}} {
		if _, line := e.knock(t, e.alice, alice, netip.Addr{}, k.proto, k.port); line.String("verdict") != "grant" {
			t.Errorf("knock for %s/%d: %v, want a grant", k.proto, k.port, line)
		}
	}
	e.check(t, []probeWant{
		{"hidden", mallory, packet.TCP, tcpA, "hidden"},
		{"hidden", mallory, packet.UDP, udpA, "hidden"},
		{"granted", alice, packet.TCP, tcpA, "open"},
		{"granted", alice, packet.UDP, udpA, "open"},
		{"admin's DROP wins", alice, packet.TCP, tcpB, "silent"},
		{"untouched", mallory, packet.TCP, sshPort, "open"},
		{"untouched", mallory, packet.TCP, openPort, "open"},
		{"untouched", mallory, packet.TCP, closedPort, "refused"},
		{"untouched", mallory, packet.UDP, closedPort, "refused"},
	})
	stopped := talk(t, alice, tcpA)
	if stopped == nil {
		return
	}
	time.Sleep(300 * time.Millisecond)
	sent := time.Now()
	if out, errOut, code := sknockCLI(t, nil, "grants", "revoke", "--source", alice.addr.String(), "--socket", e.pki.ControlSocket()); code != 0 {
		t.Fatalf("sknock grants revoke: exit %d\n%s%s", code, out, errOut)
	}
	wantStoppedWithin(t, stopped, sent, "revoked: the live connection", "the revoke")
}

// wantStoppedWithin fails t unless stopped (see talk) fires within 2 s of
// sent, when after happened to what.
func wantStoppedWithin(t *testing.T, stopped <-chan time.Time, sent time.Time, what, after string) {
	t.Helper()
	select {
	case at := <-stopped:
		if took := at.Sub(sent); took > 2*time.Second {
			t.Errorf("%s ended %v after %s, want within 2 s", what, took, after)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%s still talks 5 s after %s", what, after)
	}
}

// TestIntegrationEnforcementMatrix runs the matrix; see otherTools.
func TestIntegrationEnforcementMatrix(t *testing.T) {
	requireTools(t, "nft")
	for _, policy := range []string{"drop", "reject"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			e := matrixEnv(t, policy)
			for _, row := range otherTools {
				if row.add != "" {
					runScript(t, e.net.Server, row.add)
				}
				if row.above {
					waitJumpsFirst(t, e.net.Server)
				}
				for _, v6 := range []bool{false, true} {
					fam := map[bool]string{false: "ipv4", true: "ipv6"}[v6]
					t.Run(strings.ReplaceAll(row.name, " ", "_")+"/"+fam, func(t *testing.T) { e.cells(t, v6) })
				}
				if row.del != "" {
					runScript(t, e.net.Server, row.del)
				}
			}
		})
	}
}

// TestIntegrationAnycast: with forwarding on, the kernel adds the IPv6
// subnet-router anycast address (fd00:5e::) and delivers datagrams sent
// to it to local sockets. The gate meets them as it meets any local
// address: hidden from mallory, open to alice after her knock (which
// shows the datagrams do reach the service).
func TestIntegrationAnycast(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	e.net.Server.MustRun("sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	anycast := netip.MustParseAddr("fd00:5e::")
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := e.net.Server.Run("ip", "-6", "route", "show", "table", "local", "type", "anycast")
		if strings.Contains(out, "fd00:5e:: ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no anycast address fd00:5e:: 5 s after forwarding was turned on:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	alice, mallory := e.client(true), e.mallory(true)
	for _, p := range []struct {
		proto packet.Proto
		port  uint16
	}{{packet.UDP, udpA}, {packet.TCP, tcpA}} {
		addr := e2e.AddrPort(anycast, p.port)
		echo := func(from peer) error {
			if p.proto == packet.UDP {
				return udpAnyReply(from.ns, addr, dropTimeout)
			}
			return e2e.TCPEcho(from.ns, addr, dropTimeout)
		}
		if err := echo(mallory); !e2e.IsTimeout(err) {
			t.Errorf("mallory -> %s/%s: %v, want a timeout (hidden)", p.proto, addr, err)
		}
		e.knock(t, e.alice, alice, netip.Addr{}, p.proto, p.port)
		if err := echo(alice); err != nil && p.proto == packet.UDP {
			t.Errorf("alice -> %s/%s after her knock: %v, want the echo (the anycast address is delivered locally)", p.proto, addr, err)
		}
	}
}

// udpAnyReply sends a datagram to addr from an unconnected socket in ns
// and waits for a reply from any address: a service answers a datagram
// to an anycast address from its unicast one, which a connected socket
// would not take.
func udpAnyReply(ns *netns.NS, addr string, timeout time.Duration) error {
	var c net.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("udp", ":0")
		return err
	}); err != nil {
		return err
	}
	defer c.Close()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo([]byte("ping\n"), to); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	_, _, err = c.ReadFrom(make([]byte, 64))
	return err
}

// TestIntegrationReusedTuple: a SYN on the tuple of a connection the
// server reset (conntrack keeps it, in CLOSE, and classes the client's
// next SYN on it ESTABLISHED) meets the gate like any other SYN: while
// the grant lives it is granted (as a retransmitted SYN of a granted
// connection is), and once the grant has ended it is hidden.
func TestIntegrationReusedTuple(t *testing.T) {
	requireTools(t, "ss")
	const open = 2 * time.Second
	e := newEnv(t, "drop", open)
	for i, v6 := range []bool{false, true} {
		alice := e.client(v6)
		_, line := e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, tcpA)
		granted := time.Now()
		if line.String("verdict") != "grant" {
			t.Fatalf("knock: %v, want a grant", line)
		}
		local := netip.AddrPortFrom(alice.addr, uint16(45000+i))
		server := e2e.AddrPort(e2e.ServerAddr(alice.addr), tcpA)
		// Connect and talk, the server resets; then the same tuple again
		// within the grant, which the server resets too.
		for n := range 2 {
			if err := echoThenServerReset(e.net.Server, alice.ns, local, server); err != nil {
				t.Fatalf("%s: connection %d from %s within the grant: %v, want the echo", alice.name, n+1, local, err)
			}
		}
		if wait := time.Until(granted.Add(open + 500*time.Millisecond)); wait > 0 {
			time.Sleep(wait)
		}
		if err := echoThenServerReset(e.net.Server, alice.ns, local, server); !e2e.IsTimeout(err) {
			t.Errorf("%s: the reset tuple %s after the grant ended: %v, want a timeout (hidden)", alice.name, local, err)
		}
	}
}

// echoThenServerReset connects from local to server inside client, echoes
// a line, and has the server's socket destroyed (ss -K), which resets the
// connection from the server's side.
func echoThenServerReset(serverNS, client *netns.NS, local netip.AddrPort, server string) error {
	var conn net.Conn
	err := client.Do(func() error {
		d := net.Dialer{Timeout: dropTimeout, LocalAddr: net.TCPAddrFromAddrPort(local)}
		c, err := d.Dial("tcp", server)
		conn = c
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := e2e.Echo(conn, []byte("ping\n"), probeTimeout); err != nil {
		return err
	}
	if out, err := serverNS.Run("ss", "-K", "-t", "dport", "=", fmt.Sprintf(":%d", local.Port())); err != nil {
		return fmt.Errorf("ss -K: %v: %s", err, out)
	}
	conn.SetReadDeadline(time.Now().Add(probeTimeout))
	if _, err := conn.Read(make([]byte, 1)); !e2e.IsRefused(err) && !strings.Contains(fmt.Sprint(err), "reset") {
		return fmt.Errorf("after the server's reset: %v, want connection reset", err)
	}
	return nil
}

// markLayout is the rule set of the layout before issue 19 for sections
// under reject (the refusal and revocation carried by packet marks and
// connmarks), as `sknockd --rules-script apply` of that version rendered
// it, for iptables-restore; %s is the family's port unreachable.
const markLayout = `*mangle
:SKNOCK - [0:0]
-A SKNOCK -m addrtype --dst-type UNICAST -m addrtype ! --dst-type LOCAL -j RETURN
-A SKNOCK -p tcp -m connmark --mark 0x2/0x2 -j MARK --set-xmark 0x1/0x1
-A SKNOCK -m mark --mark 0x1/0x1 -j RETURN
-A SKNOCK -m connmark --mark 0x2/0x2 -j DROP
-A SKNOCK -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
-A SKNOCK -i lo -j RETURN
-A SKNOCK -p tcp -m tcp --dport 22 -j RETURN
-A SKNOCK -p tcp -m tcp --dport 2000 --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 101
-A SKNOCK -p tcp -m tcp --dport 2000 -j MARK --set-xmark 0x1/0x1
-A SKNOCK -p tcp -m tcp --dport 2000 -j RETURN
-A SKNOCK -p tcp -m tcp --dport 3000 --tcp-flags SYN,ACK,FIN,RST SYN -j NFQUEUE --queue-num 101
-A SKNOCK -p tcp -m tcp --dport 3000 -j MARK --set-xmark 0x1/0x1
-A SKNOCK -p tcp -m tcp --dport 3000 -j RETURN
-A SKNOCK -p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101
-A SKNOCK -p udp -m udp --dport 8001 -j NFQUEUE --queue-num 101
-A SKNOCK -p udp -m udp --dport 40000:40100 -m length --length 328:65535 -j NFQUEUE --queue-num 100
-A SKNOCK -p udp -m udp --dport 40000:40100 -j MARK --set-xmark 0x1/0x1
-A SKNOCK -p udp -m udp --dport 40000:40100 -j RETURN
-I PREROUTING 1 -j SKNOCK
-I POSTROUTING 1 -m conntrack --ctstate DNAT --ctdir ORIGINAL -m mark --mark 0x1/0x1 -j DROP
COMMIT
*filter
:SKNOCK - [0:0]
-A SKNOCK -p tcp -m mark --mark 0x1/0x1 -j REJECT --reject-with tcp-reset
-A SKNOCK -p udp -m mark --mark 0x1/0x1 -j REJECT --reject-with %s
-I INPUT 1 -j SKNOCK
-I FORWARD 1 -m conntrack --ctstate DNAT -j SKNOCK
COMMIT
`

// TestIntegrationUpgradeFromMarkLayout: with the rules of the mark layout
// in place (as a stopped older sknockd leaves them) and connections open,
// sknockd starts: a prober never gets through to a protected port, the
// open connections stay up, and the rules end in the new layout, with no
// mark rule or old backstop left.
func TestIntegrationUpgradeFromMarkLayout(t *testing.T) {
	requireTools(t)
	e := newServedEnv(t)
	// Conntrack tracks a namespace's connections only once a rule needs
	// it; the connections below stand for ones the older sknockd let in.
	track := forBoth("-A INPUT -m conntrack --ctstate INVALID")
	runScript(t, e.net.Server, track)
	var conns []net.Conn
	for _, v6 := range []bool{false, true} {
		c := e.client(v6)
		conn, err := e2e.DialTCP(c.ns, e2e.AddrPort(e2e.ServerAddr(c.addr), tcpB), probeTimeout)
		if err != nil {
			t.Fatalf("%s: connect before the rules: %v", c.name, err)
		}
		defer conn.Close()
		if err := e2e.Echo(conn, []byte("before\n"), probeTimeout); err != nil {
			t.Fatalf("%s: echo before the rules: %v", c.name, err)
		}
		conns = append(conns, conn)
	}
	for _, fam := range []struct{ restore, unreachable string }{{"iptables-restore", "icmp-port-unreachable"}, {"ip6tables-restore", "icmp6-port-unreachable"}} {
		cmd := e.net.Server.Command(t.Context(), fam.restore, "--noflush")
		cmd.Stdin = strings.NewReader(fmt.Sprintf(markLayout, fam.unreachable))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s of the mark layout: %v\n%s", fam.restore, err, out)
		}
	}
	runScript(t, e.net.Server, strings.ReplaceAll(track, " -A ", " -D "))
	for i, conn := range conns {
		if err := e2e.Echo(conn, []byte("old\n"), probeTimeout); err != nil {
			t.Fatalf("connection %d (v4, v6) under the mark layout: %v, want the echo", i, err)
		}
	}
	p := startProber(t, e.net.Mallory, proberTargets()...)
	mark := p.counts()
	e.startDaemon(t, liveConfig{policy: "reject"})
	time.Sleep(noDaemonFor)
	p.wantNoneSince(t, "the start over the mark layout", mark)
	p.halt()
	for i, conn := range conns {
		if err := e2e.Echo(conn, []byte("after\n"), probeTimeout); err != nil {
			t.Errorf("connection %d (v4, v6) opened before the upgrade: %v, want the echo", i, err)
		}
	}
	save := e2e.IptablesSave(t, e.net.Server)
	checkOneJump(t, save)
	for _, old := range []string{"-m mark --mark 0x1/0x1", "connmark"} {
		if strings.Contains(save, old) {
			t.Errorf("after the upgrade a rule of the mark layout (%q) is left:\n%s", old, save)
		}
	}
	if !strings.Contains(save, "-A SKNOCK-REJECT") {
		t.Errorf("after the upgrade no reject chain:\n%s", save)
	}
}

// BenchmarkRefusalTiming measures, under reject, how long a refusal takes
// to come back to a client, hidden against closed: a SYN to a hidden TCP
// port against a closed one, and a knock-sized datagram to a knock port
// against a closed UDP port (spaced under the knock rate limit, so every
// knock is read by sknockd). It reports medians and 90th percentiles in
// microseconds, as seen by the client's connect or read; run it alone:
//
//	go test -run '^$' -bench RefusalTiming -benchtime 1x ./cmd/sknockd
func BenchmarkRefusalTiming(b *testing.B) {
	testenv.RequireRoot(b)
	n := e2e.NewNet(b)
	p := e2e.NewPKI(b)
	e2e.ServeTCPEcho(b, n.Server, fmt.Sprintf(":%d", tcpA))
	e2e.StartDaemon(b, n, p.Config(fmt.Sprintf(sections, "reject", time.Minute)))
	const samples = 100
	timeIt := func(f func() error) (time.Duration, error) {
		start := time.Now()
		err := f()
		return time.Since(start), err
	}
	tcp := func(port uint16) func() error {
		return func() error {
			return e2e.TCPEcho(n.Mallory, e2e.AddrPort(e2e.ServerV4, port), probeTimeout)
		}
	}
	udp := func(port uint16, size int) func() error {
		return func() error {
			c, err := e2e.DialUDP(n.Mallory, e2e.AddrPort(e2e.ServerV4, port))
			if err != nil {
				return err
			}
			defer c.Close()
			if _, err := c.Write(make([]byte, size)); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(probeTimeout))
			_, err = c.Read(make([]byte, 64))
			return err
		}
	}
	series := []struct {
		name string
		f    func() error
	}{
		{"tcp-hidden", tcp(tcpA)}, {"tcp-closed", tcp(closedPort)},
		{"knock-port", udp(e2e.KnockPort, 400)}, {"udp-closed", udp(closedPort, 400)},
	}
	for b.Loop() {
		got := make([][]time.Duration, len(series))
		for range samples {
			for i, s := range series {
				d, err := timeIt(s.f)
				if !e2e.IsRefused(err) {
					b.Fatalf("%s: %v, want connection refused", s.name, err)
				}
				got[i] = append(got[i], d)
			}
			time.Sleep(60 * time.Millisecond) // under the knock rate limit
		}
		for i, s := range series {
			slices.Sort(got[i])
			b.ReportMetric(float64(got[i][len(got[i])/2].Microseconds()), s.name+"-p50-µs")
			b.ReportMetric(float64(got[i][len(got[i])*9/10].Microseconds()), s.name+"-p90-µs")
		}
	}
}

// TestIntegrationContainersRevocation: a revoke ends a live connection to
// a port published from a container (DNAT, forwarded: no local socket to
// destroy). Its conntrack entry gets the reject label, so the client's
// next segment is refused with a reset under either policy, never passed
// on to the container; the client's connection ends within 2 s, and the
// port is hidden again.
func TestIntegrationContainersRevocation(t *testing.T) {
	requireTools(t)
	for _, policy := range []string{"reject", "drop"} {
		t.Run(policy, func(t *testing.T) {
			e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: policy}
			e.alice = e.pki.Client(t, "alice", "tcp/2000,tcp/2001")
			addContainers(t, e, dockerRules)
			e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(fmt.Sprintf(containerSections, policy, "1m")))
			alice := e.client(false)
			if _, line := e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, pubA); line.String("verdict") != "grant" {
				t.Fatalf("knock: %v, want a grant", line)
			}
			stopped := talk(t, alice, pubA)
			if stopped == nil {
				t.FailNow()
			}
			time.Sleep(600 * time.Millisecond)
			sent := time.Now()
			if out, errOut, code := sknockCLI(t, nil, "grants", "revoke", "--source", alice.addr.String(), "--socket", e.pki.ControlSocket()); code != 0 {
				t.Fatalf("sknock grants revoke: exit %d\n%s%s", code, out, errOut)
			}
			wantStoppedWithin(t, stopped, sent, "the connection to the container", "the revoke")
			e.wantClosed(t, alice, packet.TCP, pubA)
		})
	}
}

// speakerRules publishes, Docker's way, tcp/2004 from ctrA's 2003 and
// tcp/2005 from its 2005, for services that speak first: one backend
// port other than the published one (-p 2004:2003), one the same
// (-p 2005:2005), where masquerading the service's segment can keep the
// port the client connected to.
var speakerRules = fmt.Sprintf(`*nat
-A DOCKER ! -i %[1]s -p tcp -m tcp --dport 2004 -j DNAT --to-destination %[2]s:2003
-A DOCKER ! -i %[1]s -p tcp -m tcp --dport 2005 -j DNAT --to-destination %[2]s:2005
COMMIT
*filter
-A DOCKER -d %[2]s/32 ! -i %[1]s -o %[1]s -p tcp -m tcp --dport 2003 -j ACCEPT
-A DOCKER -d %[2]s/32 ! -i %[1]s -o %[1]s -p tcp -m tcp --dport 2005 -j ACCEPT
COMMIT
`, ctrBridge, ctrA)

// serveSpeaker serves tcp addr in ns with a service that speaks first: it
// writes a line every 100 ms to each connection and never reads.
func serveSpeaker(t *testing.T, ns *netns.NS, addr string) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("speaker on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				for range 600 { // at most a minute
					c.SetWriteDeadline(time.Now().Add(time.Second))
					if _, err := c.Write([]byte("tick\n")); err != nil {
						return
					}
					time.Sleep(100 * time.Millisecond)
				}
			}()
		}
	}()
}

// listen reads what a speaking service says on conn and keeps the time
// of the last byte read.
type listener struct {
	mu   sync.Mutex
	last time.Time
	err  error // why reading stopped
}

func listenTo(t *testing.T, conn net.Conn) *listener {
	l := &listener{last: time.Now()}
	t.Cleanup(func() { conn.Close() })
	go func() {
		b := make([]byte, 512)
		for range 1200 {
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Read(b); err != nil {
				l.mu.Lock()
				l.err = err
				l.mu.Unlock()
				return
			}
			l.mu.Lock()
			l.last = time.Now()
			l.mu.Unlock()
		}
	}()
	return l
}

// stopped returns why reading stopped, nil while it goes on.
func (l *listener) stopped() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *listener) lastRead() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// TestIntegrationContainersRevocationServerSpeaksFirst: a revoke ends a
// live connection to a container whose service speaks first and whose
// client only listens (as a log stream or a push channel does), with the
// backend port other than the published one. The service's next
// segment, in the reply direction, must not re-create the connection:
// nothing the service writes reaches the client later than 2 s after the
// revoke, and the client's next segment is reset (under either policy).
// Before the reject label was set on forwarded connections
// (their conntrack entry was deleted), the service's next segment was
// picked up by conntrack as a new flow and masqueraded to the published
// port, and the client went on hearing it (2005-2005). The service
// itself is not reset: its segments are dropped until it gives up.
//
// The last case protects TCP ports only, under drop, and starts sknockd
// before the host forwards: its rules name no conntrack label until
// forwarding is turned on, and then do within 3 s (rules.Keeper.Refit),
// so that the connection opened after is revoked as well.
func TestIntegrationContainersRevocationServerSpeaksFirst(t *testing.T) {
	requireTools(t)
	type ports struct{ pub, backend uint16 }
	cases := []struct {
		policy string
		port   ports
		late   bool // TCP only; sknockd starts before the host forwards
	}{
		{"reject", ports{2004, 2003}, false}, {"reject", ports{2005, 2005}, false},
		{"drop", ports{2004, 2003}, false}, {"drop", ports{2005, 2005}, false},
		{"drop", ports{2005, 2005}, true},
	}
	for _, tc := range cases {
		policy, port := tc.policy, tc.port
		name := fmt.Sprintf("%s/%d-%d", policy, port.pub, port.backend)
		if tc.late {
			name += "/forwarding-after-start"
		}
		t.Run(name, func(t *testing.T) {
			e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: policy}
			e.alice = e.pki.Client(t, "alice", fmt.Sprintf("tcp/%d", port.pub))
			protect := "protect: [tcp/2000, tcp/2001, tcp/2004, tcp/2005, udp/8000]"
			if tc.late {
				protect = "protect: [tcp/2000, tcp/2001, tcp/2004, tcp/2005]"
			}
			sections := strings.Replace(fmt.Sprintf(containerSections, policy, "1m"), "protect: [tcp/2000, tcp/2001, udp/8000]", protect, 1)
			if tc.late {
				e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(sections))
				if labelRules(t, e.net.Server) {
					t.Fatal("rules name a conntrack label before the host forwards (TCP only, drop)")
				}
			}
			ctr := addContainers(t, e, dockerRules)
			runScript(t, e.net.Server, "iptables-restore --noflush <<'EOF'\n"+speakerRules+"EOF\n")
			serveSpeaker(t, ctr, fmt.Sprintf(":%d", port.backend))
			if tc.late {
				if !within(time.Now(), 3*time.Second, func() bool { return labelRules(t, e.net.Server) }) {
					t.Fatal("no rule names the reject label 3 s after the host started forwarding")
				}
			} else {
				e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(sections))
			}
			{
				alice := e.client(false)
				if _, line := e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, port.pub); line.String("verdict") != "grant" {
					t.Fatalf("knock: %v, want a grant", line)
				}
				conn, err := e2e.DialTCP(alice.ns, e2e.AddrPort(e2e.ServerAddr(alice.addr), port.pub), probeTimeout)
				if err != nil {
					t.Fatalf("connect to tcp/%d: %v", port.pub, err)
				}
				heard := listenTo(t, conn)
				time.Sleep(600 * time.Millisecond)
				if since := time.Since(heard.lastRead()); since > 300*time.Millisecond {
					t.Fatalf("the service said nothing for %v before the revoke", since)
				}
				sent := time.Now()
				if out, errOut, code := sknockCLI(t, nil, "grants", "revoke", "--source", alice.addr.String(), "--socket", e.pki.ControlSocket()); code != 0 {
					t.Fatalf("sknock grants revoke: exit %d\n%s%s", code, out, errOut)
				}
				time.Sleep(time.Until(sent.Add(4 * time.Second)))
				if last := heard.lastRead(); last.After(sent.Add(2 * time.Second)) {
					t.Errorf("the client still heard the service %v after the revoke", last.Sub(sent).Round(time.Millisecond))
				}
				// The client's own next segment is reset, whatever the
				// policy (the connection was granted: nothing is hidden
				// from its client), and never passed on to the service.
				conn.Write([]byte("still there?\n"))
				deadline := time.Now().Add(2 * time.Second)
				err = nil
				for time.Now().Before(deadline) {
					if err = heard.stopped(); err != nil {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("the client after its write that followed the revoke: %v, want a reset", err)
				}
			}
		})
	}
}

// labelRules reports whether any rule of ns's iptables or ip6tables names a
// conntrack label.
func labelRules(t *testing.T, ns *netns.NS) bool {
	t.Helper()
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if strings.Contains(ns.MustRun(save), "connlabel") {
			return true
		}
	}
	return false
}

// TestIntegrationGrantInPlace: while nothing follows sknock's jump in
// mangle PREROUTING, a granted SYN is accepted outright (SKNOCK-GRANT
// counts nothing: no second pass); the moment another tool appends a
// rule there, grants repeat through the chain again and that rule sees
// them (an administrator's DROP for the port wins at once, before the
// keeper has read the tables); once it is gone, grants are accepted in
// place again.
func TestIntegrationGrantInPlace(t *testing.T) {
	e := newEnv(t, "drop", time.Minute)
	srv := e.net.Server
	for _, v6 := range []bool{false, true} {
		fam := map[bool]string{false: "iptables", true: "ip6tables"}[v6]
		alice := e.client(v6)
		if _, line := e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, tcpA); line.String("verdict") != "grant" {
			t.Fatalf("%s: knock: %v, want a grant", alice.name, line)
		}
		repeats := func() int {
			t.Helper()
			out := srv.MustRun(fam, "-w", "-t", "mangle", "-nvxL", "SKNOCK-GRANT")
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 2 && f[2] == "MARK" {
					n, err := strconv.Atoi(f[0])
					if err != nil {
						t.Fatalf("SKNOCK-GRANT counter %q: %v", l, err)
					}
					return n
				}
			}
			t.Fatalf("no MARK rule in SKNOCK-GRANT:\n%s", out)
			return 0
		}
		// The keeper reads the tables twice a second: wait for a read
		// at the current generation, then connect.
		time.Sleep(1200 * time.Millisecond)
		before := repeats()
		if err := probe(alice, packet.TCP, tcpA, probeTimeout); err != nil {
			t.Fatalf("%s: granted connection: %v", alice.name, err)
		}
		if n := repeats(); n != before {
			t.Errorf("%s: a granted SYN went through SKNOCK-GRANT (%d → %d) with nothing after the jump, want it accepted in place", fam, before, n)
		}

		drop := []string{"-w", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "--dport", strconv.Itoa(tcpA), "--syn", "-j", "DROP"}
		srv.MustRun(append([]string{fam}, drop...)...)
		if err := probe(alice, packet.TCP, tcpA, dropTimeout); !e2e.IsTimeout(err) {
			t.Errorf("%s: right after an appended DROP: %v, want the DROP to win (timeout)", fam, err)
		}
		if n := repeats(); n <= before {
			t.Errorf("%s: SKNOCK-GRANT counted %d, want the granted SYN repeated through the chain", fam, n)
		}
		drop[3] = "-D"
		srv.MustRun(append([]string{fam}, drop...)...)
		time.Sleep(1200 * time.Millisecond)
		before = repeats()
		if err := probe(alice, packet.TCP, tcpA, probeTimeout); err != nil {
			t.Fatalf("%s: granted connection after the DROP went: %v", alice.name, err)
		}
		if n := repeats(); n != before {
			t.Errorf("%s: still repeating (%d → %d) once the later rule is gone", fam, before, n)
		}
	}
}
