//go:build linux

package queue_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"sknock/packet"
	"sknock/queue"
)

// TestIntegrationRepeatLoop: a rule above the gate's rules that rewrites
// the mark (CONNMARK --restore-mark, first in mangle PREROUTING) strips
// the signal bit of every packet the gate repeats, which then comes back
// to the queue. The gate answers it there without another repeat: the
// granted SYN is accepted and the connection opens, the refused one is
// dropped, and each loop is counted, a handful of times, not thousands.
func TestIntegrationRepeatLoop(t *testing.T) {
	server, client, nsFile := newQueueNet(t, "ql", "qm")
	for _, fam := range []string{"iptables", "ip6tables"} {
		for _, rule := range [][]string{
			{"-A", "PREROUTING", "-j", "CONNMARK", "--restore-mark"},
			{"-A", "PREROUTING", "-m", "mark", "--mark", "0x20000000/0x20000000", "-j", "MARK", "--set-xmark", "0x0/0x20000000"},
			{"-A", "PREROUTING", "-p", "tcp", "--syn", "--dport", "2010:2011", "-j", "NFQUEUE", "--queue-num", "7003"},
		} {
			server.MustRun(append([]string{fam, "-w", "-t", "mangle"}, rule...)...)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, err := queue.NewGate(queue.GateConfig{
		Queue: 7003, NetNS: int(nsFile.Fd()),
		Decide: func(h *packet.Header) packet.Verdict {
			if h.DstPort == 2010 {
				return packet.Accept
			}
			return packet.Reject
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitBound(t, server, 7003)
	for _, addr := range []string{"198.18.0.1", "[fd00:5e::1]"} {
		for _, port := range []string{"2010", "2011"} {
			go acceptAll(listenIn(t, server, addr+":"+port))
		}
	}
	for _, host := range []string{"198.18.0.1", "fd00:5e::1"} {
		before := g.Stats().Packets.Load()
		if err := dialIn(client, net.JoinHostPort(host, "2010"), 3*time.Second); err != nil {
			t.Errorf("connect to granted %s:2010 under a mark-rewriting rule: %v, want success", host, err)
		}
		err := dialIn(client, net.JoinHostPort(host, "2011"), time.Second)
		var nerr net.Error
		if !errors.As(err, &nerr) || !nerr.Timeout() {
			t.Errorf("connect to refused %s:2011: %v, want a timeout (dropped, fail closed)", host, err)
		}
		if n := g.Stats().Packets.Load() - before; n > 8 {
			t.Errorf("%s: the gate saw %d packets for two connection attempts, want a few (a loop is cut at once)", host, n)
		}
	}
	if n := g.Stats().RepeatLoops.Load(); n < 4 {
		t.Errorf("RepeatLoops = %d, want at least 4 (a grant and a refusal, per family)", n)
	}
}
