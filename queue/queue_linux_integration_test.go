//go:build linux

package queue_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/packet"
	"sknock/queue"
)

// Queue numbers inside the test's own server namespace: NFQUEUE numbers
// are per namespace, so these never meet the host's queues.
const (
	itGateQueue  = 7001
	itKnockQueue = 7002
	itMark       = 0x1
)

// TestIntegrationGateAndKnock binds both readers in a server namespace
// behind real iptables/ip6tables rules and talks to them from a client
// namespace over a veth pair: the gate accepts TCP port 2000, drops 2001
// and rejects 2002 (a TCP reset through the REJECT-on-mark rule); a UDP
// knock to 20000 reaches the knock handler and draws no ICMP answer.
func TestIntegrationGateAndKnock(t *testing.T) {
	server, client, nsFile := newQueueNet(t, "qs", "qc")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The gate decides by port, and only for the client's addresses.
	clients := map[netip.Addr]bool{netip.MustParseAddr("198.18.0.2"): true, netip.MustParseAddr("fd00:5e::2"): true}
	gate, err := queue.NewGate(queue.GateConfig{
		Queue: itGateQueue, RejectMark: itMark, NetNS: int(nsFile.Fd()),
		Decide: func(h *packet.Header) packet.Verdict {
			if !clients[h.Src] || h.TCPFlags&packet.TCPSyn == 0 {
				return packet.Drop
			}
			switch h.DstPort {
			case 2000:
				return packet.Accept
			case 2002:
				return packet.Reject
			}
			return packet.Drop
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	type knockSeen struct {
		src     netip.Addr
		payload string
	}
	knocks := make(chan knockSeen, 16)
	knock, err := queue.NewKnock(queue.KnockConfig{
		Queue: itKnockQueue, NetNS: int(nsFile.Fd()), Workers: 2,
		Handle: func(src netip.Addr, payload []byte) {
			select {
			case knocks <- knockSeen{src, string(payload)}:
			default:
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	runErrs := make(chan error, 2)
	go func() { runErrs <- gate.Run(ctx) }()
	go func() { runErrs <- knock.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-runErrs; err != nil {
				t.Errorf("reader Run: %v", err)
			}
		}
	}()
	waitBound(t, server, itGateQueue, itKnockQueue)

	// Services on all three ports, so that a refusal can only come from
	// the gate's reject.
	for _, addr := range []string{"198.18.0.1", "[fd00:5e::1]"} {
		for _, port := range []string{"2000", "2001", "2002"} {
			ln := listenIn(t, server, addr+":"+port)
			go acceptAll(ln)
		}
	}

	for _, fam := range []struct{ name, server string }{{"ipv4", "198.18.0.1"}, {"ipv6", "fd00:5e::1"}} {
		t.Run(fam.name, func(t *testing.T) {
			host := func(port string) string { return net.JoinHostPort(fam.server, port) }

			if err := dialIn(client, host("2000"), 3*time.Second); err != nil {
				t.Errorf("connect to accepted port 2000: %v, want success", err)
			}
			start := time.Now()
			err := dialIn(client, host("2002"), 3*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("connect to rejected port 2002: %v, want connection refused", err)
			} else if d := time.Since(start); d > time.Second {
				t.Errorf("connect to rejected port 2002 refused after %v, want a prompt reset", d)
			}
			err = dialIn(client, host("2001"), time.Second)
			var nerr net.Error
			if !errors.As(err, &nerr) || !nerr.Timeout() {
				t.Errorf("connect to dropped port 2001: %v, want a timeout", err)
			}

			// Control: a UDP port without any rule answers ICMP port
			// unreachable, which a connected socket reports as refused.
			if err := udpIn(client, host("20001"), "probe", 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("UDP to closed port 20001: %v, want connection refused (ICMP visible)", err)
			}
			payload := "knock over " + fam.name
			err = udpIn(client, host("20000"), payload, time.Second)
			if !errors.As(err, &nerr) || !nerr.Timeout() {
				t.Errorf("UDP knock to 20000: %v, want no answer at all (timeout)", err)
			}
			select {
			case got := <-knocks:
				want := knockSeen{netip.MustParseAddr(strings.Trim(clientOf(fam.server), "[]")), payload}
				if got != want {
					t.Errorf("knock handler got %+v, want %+v", got, want)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("knock handler not called")
			}
		})
	}

	gs, ks := gate.Stats(), knock.Stats()
	if gs.Accepted.Load() < 2 || gs.Rejected.Load() < 2 || gs.Dropped.Load() < 2 {
		t.Errorf("gate stats: accepted %d, rejected %d, dropped %d; want at least 2 each (ipv4 and ipv6)",
			gs.Accepted.Load(), gs.Rejected.Load(), gs.Dropped.Load())
	}
	if ks.Queued.Load() != 2 || ks.Shed.Load() != 0 {
		t.Errorf("knock stats: queued %d, shed %d; want 2, 0", ks.Queued.Load(), ks.Shed.Load())
	}
	t.Logf("kernel queue stats: gate %+v, knock %+v", kernelStats(t, server, itGateQueue), kernelStats(t, server, itKnockQueue))
}

// newQueueNet skips (fails under SKNOCK_E2E=1) without root or the
// tools; otherwise it makes a server and a client namespace joined by a
// veth pair (198.18.0.1/2, fd00:5e::1/2), installs the test rules in the
// server and returns the namespaces and an open file of the server's,
// for the readers' NetNS. All are removed or closed when t ends.
func newQueueNet(t *testing.T, serverName, clientName string) (server, client *netns.NS, nsFile *os.File) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, tool := range []string{"ip", "iptables", "ip6tables"} {
		_, err := exec.LookPath(tool)
		testenv.Require(t, err == nil, tool+" is not installed")
	}
	server = netns.New(t, serverName)
	client = netns.New(t, clientName)
	netns.Link(t, server, []string{"198.18.0.1/24", "fd00:5e::1/64"}, client, []string{"198.18.0.2/24", "fd00:5e::2/64"})
	installRules(t, server)
	nsFile, err := os.Open(server.Path())
	if err != nil {
		t.Fatalf("open server namespace: %v", err)
	}
	t.Cleanup(func() { nsFile.Close() })
	return server, client, nsFile
}

func clientOf(server string) string {
	if strings.Contains(server, ":") {
		return "fd00:5e::2"
	}
	return "198.18.0.2"
}

// installRules installs the static rule shape of DESIGN.md in ns, for
// IPv4 and IPv6.
func installRules(t *testing.T, ns *netns.NS) {
	t.Helper()
	for _, fam := range []struct{ cmd, unreachable string }{
		{"iptables", "icmp-port-unreachable"},
		{"ip6tables", "icmp6-port-unreachable"},
	} {
		mark := []string{"-m", "mark", "--mark", "0x1/0x1"}
		// A verdict's NF_REPEAT runs the chain again: the grant bit
		// accepts there, as sknock's SKNOCK-GRANT returns, so a granted
		// or settled packet crosses the queue once.
		granted := fmt.Sprintf("%#x/%#x", queue.DefaultAcceptMark, queue.DefaultAcceptMark)
		for _, rule := range [][]string{
			{"-m", "mark", "--mark", granted, "-j", "ACCEPT"},
			{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
			append(append([]string{"-p", "tcp"}, mark...), "-j", "REJECT", "--reject-with", "tcp-reset"),
			append(append([]string{"-p", "udp"}, mark...), "-j", "REJECT", "--reject-with", fam.unreachable),
			{"-p", "tcp", "--syn", "--dport", "2000:2002", "-j", "NFQUEUE", "--queue-num", "7001"},
			{"-p", "udp", "--dport", "20000", "-j", "NFQUEUE", "--queue-num", "7002", "--queue-bypass"},
		} {
			ns.MustRun(append([]string{fam.cmd, "-w", "-A", "INPUT"}, rule...)...)
		}
	}
}

// waitBound waits until every queue in queues has a socket bound in ns.
func waitBound(t *testing.T, ns *netns.NS, queues ...uint16) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The file appears with the nfnetlink_queue module, which the
		// first bind may still be loading: a failed read is "not yet".
		text, _ := ns.Run("cat", queue.KernelStatsPath)
		bound := 0
		for _, q := range queues {
			if _, err := queue.ParseKernelStats(text, q); err == nil {
				bound++
			}
		}
		if bound == len(queues) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queues %v not bound in %s after 10s:\n%s", queues, ns.Name, text)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kernelStats returns the kernel's counters of queue q in namespace ns,
// read there by a process (a thread switched into ns by netns.NS.Do would
// still read its own process's /proc/net).
func kernelStats(t *testing.T, ns *netns.NS, q uint16) queue.KernelStats {
	t.Helper()
	st, err := queue.ParseKernelStats(ns.MustRun("cat", queue.KernelStatsPath), q)
	if err != nil {
		t.Fatalf("nfqueue %d in %s: %v", q, ns.Name, err)
	}
	return st
}

// listenIn listens on TCP addr inside namespace ns until the test ends.
func listenIn(t *testing.T, ns *netns.NS, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", addr, ns.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func acceptAll(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// dialIn connects to TCP addr from namespace ns.
func dialIn(ns *netns.NS, addr string, timeout time.Duration) error {
	return ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// udpIn sends payload to UDP addr from namespace ns on a connected socket
// and waits up to wait for any answer: an ICMP error shows as a read error.
func udpIn(ns *netns.NS, addr, payload string, wait time.Duration) error {
	return ns.Do(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := c.Write([]byte(payload)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		_, err = c.Read(make([]byte, 64))
		return err
	})
}

// TestIntegrationGateBatches holds the gate reader on its first packet
// until a burst of SYNs waits in the kernel's queue, then lets it drain:
// the kernel must take the batch verdict (far fewer verdict messages than
// packets) and every held connection must open.
func TestIntegrationGateBatches(t *testing.T) {
	server, client, nsFile := newQueueNet(t, "qbs", "qbc")

	release := make(chan struct{})
	var hold sync.Once
	gate, err := queue.NewGate(queue.GateConfig{
		Queue: itGateQueue, RejectMark: itMark, NetNS: int(nsFile.Fd()),
		Decide: func(h *packet.Header) packet.Verdict {
			hold.Do(func() { <-release })
			if h.DstPort == 2000 {
				return packet.Accept
			}
			return packet.Drop
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- gate.Run(ctx) }()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("gate Run: %v", err)
		}
	}()
	waitBound(t, server, itGateQueue)
	go acceptAll(listenIn(t, server, "198.18.0.1:2000"))

	const n = 32
	dialErrs := make(chan error, n)
	for range n {
		go func() { dialErrs <- dialIn(client, "198.18.0.1:2000", 5*time.Second) }()
	}
	// All n SYNs wait in the kernel (the first one in the held reader).
	deadline := time.Now().Add(3 * time.Second)
	for {
		waiting := kernelStats(t, server, itGateQueue).Waiting
		if waiting >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d SYNs waiting in the kernel queue after 3s", waiting, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	released = true
	for range n {
		if err := <-dialErrs; err != nil {
			t.Errorf("held connection: %v, want it accepted", err)
		}
	}
	gs := gate.Stats()
	packets, messages := gs.Packets.Load(), gs.VerdictMessages.Load()
	t.Logf("%d packets answered with %d verdict messages", packets, messages)
	if packets < n || messages*4 > packets {
		t.Errorf("%d packets answered with %d verdict messages, want at least %d packets and at most a quarter as many messages", packets, messages, n)
	}
	if e := gs.VerdictErrors.Load(); e != 0 {
		t.Errorf("%d verdict messages refused", e)
	}
}

// itHoldQueue is the hold queue of TestIntegrationDeferThroughHoldQueue.
const itHoldQueue = 7102

// TestIntegrationDeferThroughHoldQueue defers a burst of SYNs: the gate
// reader moves them to the hold queue with batch NF_QUEUE verdicts, the
// hold reader receives every one and settles it, and every connection
// opens. It proves that the kernel takes NF_QUEUE in a batch verdict and
// that a packet accepted from the second queue goes on to its socket.
func TestIntegrationDeferThroughHoldQueue(t *testing.T) {
	server, client, nsFile := newQueueNet(t, "qhs", "qhc")

	release := make(chan struct{})
	var hold sync.Once
	gate, err := queue.NewGate(queue.GateConfig{
		Queue: itGateQueue, RejectMark: itMark, NetNS: int(nsFile.Fd()),
		HoldQueue: itHoldQueue, Holding: true,
		Decide: func(h *packet.Header) packet.Verdict {
			hold.Do(func() { <-release })
			return packet.Defer
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	var holder *queue.HoldReader
	holder, err = queue.NewHold(queue.HoldConfig{
		Queue: itHoldQueue, RejectMark: itMark, NetNS: int(nsFile.Fd()), MaxQueueLen: 64,
		Deliver: func(_ context.Context, p *queue.Packet, h *packet.Header) {
			v := packet.Drop
			if h.DstPort == 2000 {
				v = packet.Accept
			}
			if err := holder.Settle(p.ID, p.Mark, v); err != nil {
				t.Errorf("Settle: %v", err)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 2)
	go func() { runErr <- gate.Run(ctx) }()
	go func() { runErr <- holder.Run(ctx) }()
	released := false
	defer func() {
		if !released {
			close(release)
		}
		cancel()
		for range 2 {
			if err := <-runErr; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	}()
	waitBound(t, server, itGateQueue)
	waitBound(t, server, itHoldQueue)
	go acceptAll(listenIn(t, server, "198.18.0.1:2000"))

	const n = 32
	dialErrs := make(chan error, n)
	for range n {
		go func() { dialErrs <- dialIn(client, "198.18.0.1:2000", 5*time.Second) }()
	}
	deadline := time.Now().Add(3 * time.Second)
	for kernelStats(t, server, itGateQueue).Waiting < n {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d SYNs waiting in the gate queue after 3s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	released = true
	for range n {
		if err := <-dialErrs; err != nil {
			t.Errorf("deferred connection: %v, want it accepted from the hold queue", err)
		}
	}
	gs, hs := gate.Stats(), holder.Stats()
	t.Logf("gate: %d packets deferred with %d verdict messages; hold queue: %d packets, %d accepted", gs.Deferred.Load(), gs.VerdictMessages.Load(), hs.Packets.Load(), hs.Accepted.Load())
	if gs.Deferred.Load() < n || gs.VerdictMessages.Load()*4 > gs.Deferred.Load() {
		t.Errorf("gate deferred %d packets with %d verdict messages, want at least %d in batches (a quarter as many messages)", gs.Deferred.Load(), gs.VerdictMessages.Load(), n)
	}
	if hs.Accepted.Load() < n || gs.VerdictErrors.Load()+hs.VerdictErrors.Load() != 0 {
		t.Errorf("hold queue accepted %d (want ≥ %d); verdict errors %d and %d", hs.Accepted.Load(), n, gs.VerdictErrors.Load(), hs.VerdictErrors.Load())
	}
}
