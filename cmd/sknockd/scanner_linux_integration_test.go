//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/packet"
)

// Knock ports the scanner test probes, inside the range of sections
// (40000:40100) and apart from e2e.KnockPort, which other tests use.
var scannedKnockPorts = []int{40001, 40002, 40003}

// TestIntegrationScannerSeesNoKnockPorts shows that the knock ports do not
// mark the host (issue 12, C): under each policy nmap's UDP scan reports
// them as it reports a hidden port (and, under reject, a closed one),
// with empty probes and with knock-sized ones alike; and a datagram to a
// knock port gets the same answer whatever its length, valid knock or
// not: an ICMP port unreachable under reject, nothing under drop.
func TestIntegrationScannerSeesNoKnockPorts(t *testing.T) {
	requireTools(t, "nmap")
	for _, policy := range []string{"drop", "reject"} {
		t.Run(policy, func(t *testing.T) {
			e := newEnv(t, policy, time.Minute)
			hidden := "open|filtered" // silence: nmap cannot tell open from dropped
			if policy == "reject" {
				hidden = "closed"
			}
			want := map[string]string{fmt.Sprint(udpA): hidden, fmt.Sprint(closedPort): "closed"}
			for _, p := range scannedKnockPorts {
				want[fmt.Sprint(p)] = hidden
			}
			ports := append([]int{udpA, closedPort}, scannedKnockPorts...)
			for _, target := range []netip.Addr{e2e.ServerV4, e2e.ServerV6} {
				// Empty probes are shorter than knock.min_length; 400
				// bytes are long enough for the knock queue.
				for _, dataLength := range []int{0, 400} {
					got := nmapUDPStates(t, e.net.Mallory, target, dataLength, ports...)
					if diff := cmp.Diff(want, got); diff != "" {
						t.Errorf("nmap -sU --data-length %d %s: port states (-want +got):\n%s", dataLength, target, diff)
					}
				}
			}

			for _, v6 := range []bool{false, true} {
				c := e.client(v6)
				datagrams := []struct {
					name string
					data []byte
				}{
					{"short", make([]byte, 10)},
					{"knock-sized noise", make([]byte, 400)},
					{"valid knock", e.alice.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, c.addr)},
					{"short again", []byte("x")},
				}
				for _, d := range datagrams {
					wantKnockPortAnswer(t, e, c, scannedKnockPorts[0], d.name, d.data)
				}
			}
		})
	}
}

// wantKnockPortAnswer sends data from p to a knock port on a connected
// socket and fails t unless it gets the policy's answer for a hidden port:
// exactly one ICMP port unreachable (ECONNREFUSED on the read, and the
// server's counter of its family one up) under reject, none under drop.
func wantKnockPortAnswer(t *testing.T, e *env, p peer, port int, name string, data []byte) {
	t.Helper()
	v4Before, v6Before := e2e.DestUnreachSent(t, e.net.Server)
	c, err := e2e.DialUDP(p.ns, e2e.AddrPort(e2e.ServerAddr(p.addr), uint16(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(data); err != nil {
		t.Fatalf("%s: send %s (%d bytes): %v", p.name, name, len(data), err)
	}
	wait := 300 * time.Millisecond // what silence costs
	if e.policy == "reject" {
		wait = probeTimeout
	}
	c.SetReadDeadline(time.Now().Add(wait))
	_, err = c.Read(make([]byte, 64))
	switch {
	case e.policy == "reject" && !e2e.IsRefused(err):
		t.Errorf("%s -> udp/%d, %s (%d bytes): got %v, want connection refused (policy reject)", p.name, port, name, len(data), err)
	case e.policy == "drop" && !e2e.IsTimeout(err):
		t.Errorf("%s -> udp/%d, %s (%d bytes): got %v, want no answer (policy drop)", p.name, port, name, len(data), err)
	}
	var want4, want6 uint64
	if e.policy == "reject" {
		if p.addr.Is6() {
			want6 = 1
		} else {
			want4 = 1
		}
	}
	v4After, v6After := e2e.DestUnreachSent(t, e.net.Server)
	if v4After-v4Before != want4 || v6After-v6Before != want6 {
		t.Errorf("%s -> udp/%d, %s (%d bytes): destination unreachables sent IPv4 +%d, IPv6 +%d; want +%d, +%d",
			p.name, port, name, len(data), v4After-v4Before, v6After-v6Before, want4, want6)
	}
}

var nmapUDPPortLine = regexp.MustCompile(`(?m)^(\d+)/udp\s+(\S+)`)

// nmapUDPStates UDP-scans ports of target from ns, with probes of
// dataLength random bytes (0: nmap's own probes, empty for these ports),
// and returns port → state.
func nmapUDPStates(t *testing.T, ns *netns.NS, target netip.Addr, dataLength int, ports ...int) map[string]string {
	t.Helper()
	var list []string
	for _, p := range ports {
		list = append(list, fmt.Sprint(p))
	}
	args := []string{"nmap", "-n", "-Pn", "-sU", "--max-retries", "2"}
	if dataLength > 0 {
		args = append(args, "--data-length", fmt.Sprint(dataLength))
	}
	if target.Is6() {
		args = append(args, "-6")
	}
	args = append(args, "-p", strings.Join(list, ","), target.String())
	out := ns.MustRun(args...)
	states := map[string]string{}
	for _, m := range nmapUDPPortLine.FindAllStringSubmatch(out, -1) {
		states[m[1]] = m[2]
	}
	if len(states) != len(ports) {
		t.Logf("nmap output:\n%s", out)
	}
	return states
}
