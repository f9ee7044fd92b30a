//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/packet"
)

// TestIntegrationMappedSource: a client holds a grant for udp/8000 from
// 198.18.0.2; a UDPv6 datagram to udp/8000 whose source is
// ::ffff:198.18.0.2 must not reach the service. Linux (since 5.12) hands
// such datagrams to UDP sockets, and a dual-stack service answers them
// over IPv4, to 198.18.0.2, so the client's IPv4 socket on the spoofed
// source port sees the echo if the datagram got through. The ip6tables
// rule that drops v4-mapped sources must have counted it.
//
// The control sends the same hand-made datagram from the client's own
// IPv6 address, granted too, and gets the echo: the raw datagram is well
// formed, and a silence above is the rule set's doing.
func TestIntegrationMappedSource(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	v4, v6 := e.client(false), e.client(true)
	for _, p := range []peer{v4, v6} {
		if _, line := e.knock(t, e.alice, p, netip.Addr{}, packet.UDP, udpA); line.String("verdict") != "grant" {
			t.Fatalf("knock from %s: %v, want a grant", p.name, line)
		}
	}
	e.wantOpen(t, v4, packet.UDP, udpA)

	const controlPort, spoofPort = 41001, 41002
	if err := sendRawUDP6(e.net.Client, e2e.ClientV6, e2e.ServerV6, controlPort, udpA, "control", v6.addr); err != nil {
		t.Fatalf("control: %v", err)
	}

	mapped := netip.AddrFrom16(e2e.ClientV4.As16()) // ::ffff:198.18.0.2
	before := mappedDrops(t, e.net.Server)
	if err := sendRawUDP6(e.net.Client, mapped, e2e.ServerV6, spoofPort, udpA, "spoofed", v4.addr); err == nil {
		t.Errorf("a datagram from %s to udp/%d reached the service (its echo came back to %s)", mapped, udpA, v4.addr)
	} else if !e2e.IsTimeout(err) {
		t.Fatalf("spoofed: %v", err)
	}
	if after := mappedDrops(t, e.net.Server); after <= before {
		t.Errorf("the drop of v4-mapped sources counted %d packets, then %d; want the datagram counted", before, after)
	}
	e.wantOpen(t, v4, packet.UDP, udpA) // the grant itself is untouched
}

// sendRawUDP6 sends one UDPv6 datagram with the given source, which need
// not be an address of ns, from srcPort to dst:dstPort through a raw
// socket (IPPROTO_RAW: the header is ours), and waits for the echo on
// replyTo:srcPort. It returns nil when the echo came back, a timeout error
// when nothing did.
func sendRawUDP6(ns *netns.NS, src, dst netip.Addr, srcPort, dstPort uint16, payload string, replyTo netip.Addr) error {
	var (
		reply net.PacketConn
		fd    int
	)
	if err := ns.Do(func() (err error) {
		if reply, err = net.ListenPacket("udp", e2e.AddrPort(replyTo, srcPort)); err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		if reply != nil {
			reply.Close()
		}
		return fmt.Errorf("sockets in %s: %w", ns.Name, err)
	}
	defer reply.Close()
	defer unix.Close(fd)

	if err := unix.Sendto(fd, udp6Packet(src, dst, srcPort, dstPort, []byte(payload)), 0, &unix.SockaddrInet6{Addr: dst.As16()}); err != nil {
		return fmt.Errorf("send from %s: %w", src, err)
	}
	reply.SetReadDeadline(time.Now().Add(dropTimeout))
	buf := make([]byte, 512)
	n, from, err := reply.ReadFrom(buf)
	if err != nil {
		return err
	}
	if string(buf[:n]) != payload {
		return fmt.Errorf("got %q from %s, want the echo %q", buf[:n], from, payload)
	}
	return nil
}

// udp6Packet returns an IPv6 header and a UDP datagram with its checksum.
func udp6Packet(src, dst netip.Addr, srcPort, dstPort uint16, payload []byte) []byte {
	const ipv6Header, udpHeader = 40, 8
	udpLen := udpHeader + len(payload)
	b := make([]byte, ipv6Header+udpLen)
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(udpLen))
	b[6] = unix.IPPROTO_UDP
	b[7] = 64 // hop limit
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	u := b[ipv6Header:]
	binary.BigEndian.PutUint16(u[0:], srcPort)
	binary.BigEndian.PutUint16(u[2:], dstPort)
	binary.BigEndian.PutUint16(u[4:], uint16(udpLen))
	copy(u[udpHeader:], payload)

	// The checksum covers the pseudo-header (addresses, length, next
	// header) and the datagram.
	sum := uint32(0)
	add := func(p []byte) {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
		if len(p)%2 == 1 {
			sum += uint32(p[len(p)-1]) << 8
		}
	}
	add(b[8:40])
	sum += uint32(udpLen) + unix.IPPROTO_UDP
	add(u)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	check := ^uint16(sum)
	if check == 0 {
		check = 0xffff
	}
	binary.BigEndian.PutUint16(u[6:], check)
	return b
}

// mappedDropRule finds the counters of the gate chain's drop of v4-mapped
// sources in "ip6tables-save -c -t mangle".
var mappedDropRule = regexp.MustCompile(`(?m)^\[(\d+):\d+\] -A SKNOCK -s ::ffff:0\.0\.0\.0/96 -j DROP$`)

// mappedDrops returns how many packets the server's ip6tables rule for
// v4-mapped sources has dropped, or fails t when the rule is missing.
func mappedDrops(t *testing.T, server *netns.NS) uint64 {
	t.Helper()
	out, err := server.Run("ip6tables-save", "-c", "-t", "mangle")
	if err != nil {
		t.Fatalf("ip6tables-save: %v\n%s", err, out)
	}
	m := mappedDropRule.FindStringSubmatch(out)
	if m == nil {
		t.Errorf("ip6tables has no drop of v4-mapped sources in mangle SKNOCK:\n%s", out)
		return 0
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
