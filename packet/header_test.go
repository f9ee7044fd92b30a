package packet_test

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"sknock/packet"
	"sknock/packet/packettest"
)

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	server4 = netip.MustParseAddr("198.18.0.1")
	client6 = netip.MustParseAddr("fd00:5e::2")
	server6 = netip.MustParseAddr("fd00:5e::1")
)

// withIPv4Options inserts opts (a multiple of 4 bytes) after the fixed
// IPv4 header of pkt and fixes IHL and the total length.
func withIPv4Options(pkt, opts []byte) []byte {
	out := append(append(append([]byte(nil), pkt[:20]...), opts...), pkt[20:]...)
	out[0] = 0x40 | byte((20+len(opts))/4)
	binary.BigEndian.PutUint16(out[2:], uint16(len(out)))
	return out
}

// ipv4Frag sets the fragment offset (in 8-byte units) and the MF flag.
func ipv4Frag(pkt []byte, offset uint16, more bool) []byte {
	out := append([]byte(nil), pkt...)
	v := offset & 0x1fff
	if more {
		v |= 0x2000
	}
	binary.BigEndian.PutUint16(out[6:], v)
	return out
}

// ipv6Ext returns an IPv6 packet from client6 to server6 whose chain is
// the extension headers exts (each: type, and its body without the
// next-header byte) followed by transport of protocol proto.
func ipv6Ext(proto packet.Proto, transport []byte, exts ...[]byte) []byte {
	var chain []byte
	first := proto
	if len(exts) > 0 {
		first = packet.Proto(exts[0][0])
	}
	for i, e := range exts {
		next := byte(proto)
		if i+1 < len(exts) {
			next = exts[i+1][0]
		}
		chain = append(chain, next)
		chain = append(chain, e[1:]...)
	}
	return packettest.IP(client6, server6, first, append(chain, transport...))
}

// Extension headers for ipv6Ext: type byte, then body after next-header.
var (
	hopByHop  = []byte{0, 0, 1, 4, 0, 0, 0, 0}              // 8 bytes: PadN
	destOpts  = []byte{60, 0, 1, 4, 0, 0, 0, 0}             // 8 bytes
	routing   = []byte{43, 0, 0, 0, 0, 0, 0, 0}             // 8 bytes, type 0, no segments left
	fragFirst = []byte{44, 0, 0, 1, 0, 0, 0, 42}            // offset 0, M=1
	fragLater = []byte{44, 0, 0x05, 0x00, 0, 0, 0, 42}      // offset 160
	ah        = []byte{51, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1} // (1+2)*4 = 12 bytes
)

type decodeTest struct {
	name string
	give []byte
	want packet.Header
}

func decodeTests() []decodeTest {
	syn4 := packettest.TCPPacket(client4, 40000, server4, 2000, packet.TCPSyn)
	udp4 := packettest.UDPPacket(client4, 40001, server4, 20000, []byte("knock"))
	syn6 := packettest.TCPPacket(client6, 40000, server6, 2000, packet.TCPSyn)
	udp6 := packettest.UDPPacket(client6, 40001, server6, 20000, []byte("knock6"))

	tcpOpts := packettest.TCP(40000, 2000, packet.TCPSyn|packet.TCPAck, nil)
	tcpOpts[12] = 8 << 4 // 12 bytes of options
	tcpOpts = append(tcpOpts, 2, 4, 0x05, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7)
	tcpOpts = append(tcpOpts, "data"...)
	badOff := packettest.TCPPacket(client4, 1, server4, 2, packet.TCPSyn)
	badOff[20+12] = 4 << 4
	badUDPLen := packettest.UDPPacket(client4, 1, server4, 2, nil)
	binary.BigEndian.PutUint16(badUDPLen[20+4:], 7)
	cutUDP := packettest.UDPPacket(client4, 40001, server4, 20000, bytes.Repeat([]byte{'k'}, 100))[:20+8+10]
	longOpts := packettest.IP(client4, server4, packet.TCP, tcpOpts)[:20+24]

	v4 := func(proto packet.Proto, sport, dport uint16, flags uint8, payload string) packet.Header {
		return packet.Header{Family: 4, Proto: proto, Src: client4, Dst: server4, SrcPort: sport, DstPort: dport, TCPFlags: flags, Payload: []byte(payload)}
	}
	v6 := func(proto packet.Proto, sport, dport uint16, flags uint8, payload string) packet.Header {
		return packet.Header{Family: 6, Proto: proto, Src: client6, Dst: server6, SrcPort: sport, DstPort: dport, TCPFlags: flags, Payload: []byte(payload)}
	}
	v4none := packet.Header{Family: 4, Src: client4, Dst: server4}
	v6none := packet.Header{Family: 6, Src: client6, Dst: server6}
	tcp6 := packettest.TCP(40000, 2000, packet.TCPSyn, nil)
	udp6t := packettest.UDP(40001, 20000, []byte("x"))

	return []decodeTest{
		{name: "ipv4 tcp syn", give: syn4, want: v4(packet.TCP, 40000, 2000, packet.TCPSyn, "")},
		{name: "ipv4 udp", give: udp4, want: v4(packet.UDP, 40001, 20000, 0, "knock")},
		{name: "ipv6 tcp syn", give: syn6, want: v6(packet.TCP, 40000, 2000, packet.TCPSyn, "")},
		{name: "ipv6 udp", give: udp6, want: v6(packet.UDP, 40001, 20000, 0, "knock6")},
		{name: "ipv4 options", give: withIPv4Options(udp4, []byte{1, 1, 1, 0}), want: v4(packet.UDP, 40001, 20000, 0, "knock")},
		{name: "tcp options and data", give: packettest.IP(client4, server4, packet.TCP, tcpOpts), want: v4(packet.TCP, 40000, 2000, packet.TCPSyn|packet.TCPAck, "data")},
		{name: "tcp options cut by copy range", give: longOpts, want: v4(packet.TCP, 40000, 2000, packet.TCPSyn|packet.TCPAck, "")},
		{name: "link padding trimmed", give: append(bytes.Clone(udp4), 0, 0, 0, 0), want: v4(packet.UDP, 40001, 20000, 0, "knock")},
		{name: "ipv6 padding trimmed", give: append(bytes.Clone(udp6), 0, 0), want: v6(packet.UDP, 40001, 20000, 0, "knock6")},
		{name: "udp cut by copy range", give: cutUDP, want: v4(packet.UDP, 40001, 20000, 0, "kkkkkkkkkk")},
		{name: "ipv4 first fragment", give: ipv4Frag(udp4, 0, true), want: v4(packet.UDP, 40001, 20000, 0, "knock")},
		{name: "ipv4 later fragment", give: ipv4Frag(udp4, 185, false), want: v4none},
		{name: "ipv4 icmp", give: packettest.IP(client4, server4, 1, []byte{8, 0, 0, 0, 0, 0, 0, 0}), want: v4none},
		{name: "tcp header short", give: syn4[:20+19], want: v4none},
		{name: "udp header short", give: udp4[:20+7], want: v4none},
		{name: "tcp data offset below 5", give: badOff},
		{name: "udp length below 8", give: badUDPLen},
		{name: "empty"},
		{name: "ipv4 short", give: syn4[:19]},
		{name: "ipv4 ihl below 5", give: append([]byte{0x44}, syn4[1:]...)},
		{name: "ipv4 ihl beyond packet", give: append([]byte{0x4f}, syn4[1:40]...)},
		{name: "ipv4 total below ihl", give: append(append([]byte(nil), syn4[:2]...), append([]byte{0, 19}, syn4[4:]...)...)},
		{name: "version 5", give: append([]byte{0x55}, syn4[1:]...)},
		{name: "ipv6 short", give: syn6[:39]},
		{name: "ipv6 hop-by-hop and destination options", give: ipv6Ext(packet.TCP, tcp6, hopByHop, destOpts), want: v6(packet.TCP, 40000, 2000, packet.TCPSyn, "")},
		{name: "ipv6 routing and ah", give: ipv6Ext(packet.UDP, udp6t, routing, ah), want: v6(packet.UDP, 40001, 20000, 0, "x")},
		{name: "ipv6 first fragment", give: ipv6Ext(packet.UDP, udp6t, fragFirst), want: v6(packet.UDP, 40001, 20000, 0, "x")},
		{name: "ipv6 later fragment", give: ipv6Ext(packet.UDP, udp6t, fragLater), want: v6none},
		{name: "ipv6 chain of 8", give: ipv6Ext(packet.UDP, udp6t, hopByHop, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts), want: v6(packet.UDP, 40001, 20000, 0, "x")},
		{name: "ipv6 chain too long", give: ipv6Ext(packet.UDP, udp6t, hopByHop, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts, destOpts), want: v6none},
		{name: "ipv6 extension header cut", give: ipv6Ext(packet.TCP, tcp6, hopByHop)[:40+4], want: v6none},
		{name: "ipv6 extension length beyond packet", give: ipv6Ext(packet.TCP, nil, []byte{60, 9, 0, 0, 0, 0, 0, 0}), want: v6none},
		{name: "ipv6 no next header", give: packettest.IP(client6, server6, 59, nil), want: v6none},
	}
}

func TestDecode(t *testing.T) {
	for _, tt := range decodeTests() {
		t.Run(tt.name, func(t *testing.T) {
			// Start dirty: Decode must reset every field.
			h := packet.Header{Family: 9, Proto: 9, SrcPort: 9, Payload: []byte("old")}
			h.Decode(tt.give)
			if diff := cmp.Diff(tt.want, h, headerOpts...); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodePayloadAliasesPacket(t *testing.T) {
	pkt := packettest.UDPPacket(client4, 1, server4, 2, []byte("abc"))
	var h packet.Header
	h.Decode(pkt)
	pkt[len(pkt)-1] = 'z'
	if got := string(h.Payload); got != "abz" {
		t.Errorf("Payload after changing the packet = %q, want %q (aliasing, no copy)", got, "abz")
	}
}

func TestDecodeAllocs(t *testing.T) {
	var h packet.Header
	for _, tt := range decodeTests() {
		if n := testing.AllocsPerRun(100, func() { h.Decode(tt.give) }); n != 0 {
			t.Errorf("%s: Decode allocates %v times per packet, want 0", tt.name, n)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, tt := range decodeTests() {
		f.Add(tt.give)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var h packet.Header
		h.Decode(pkt)
		switch {
		case h.Family == 0:
			if diff := cmp.Diff(packet.Header{}, h, headerOpts...); diff != "" {
				t.Fatalf("unknown packet with fields set (-want +got):\n%s", diff)
			}
		case h.Family != 4 && h.Family != 6:
			t.Fatalf("Family = %d", h.Family)
		case h.Proto != 0 && h.Proto != packet.TCP && h.Proto != packet.UDP:
			t.Fatalf("Proto = %d", h.Proto)
		case h.Proto == 0 && (h.SrcPort != 0 || h.DstPort != 0 || h.TCPFlags != 0 || len(h.Payload) != 0):
			t.Fatalf("unknown transport with transport fields set: %+v", h)
		}
		if h.Family == 4 && !h.Src.Is4() || h.Family == 6 && !h.Src.Is6() {
			t.Fatalf("Family %d with Src %v", h.Family, h.Src)
		}
		if len(h.Payload) > 0 && indexOf(pkt, h.Payload) < 0 {
			t.Fatalf("Payload does not alias the packet")
		}
	})
}

// indexOf returns the offset at which sub aliases pkt, or -1.
func indexOf(pkt, sub []byte) int {
	for i := range pkt {
		if &pkt[i] == &sub[0] && len(pkt)-i >= len(sub) {
			return i
		}
	}
	return -1
}

// headerOpts compare Headers: addresses by value, nil and empty payloads
// alike.
var headerOpts = []cmp.Option{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}

func BenchmarkDecode(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"ipv4-tcp-syn", packettest.TCPPacket(client4, 40000, server4, 2000, packet.TCPSyn)},
		{"ipv6-tcp-syn", packettest.TCPPacket(client6, 40000, server6, 2000, packet.TCPSyn)},
		{"ipv6-ext-udp", ipv6Ext(packet.UDP, packettest.UDP(1, 2, make([]byte, 600)), hopByHop, destOpts)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var h packet.Header
			for b.Loop() {
				h.Decode(bc.pkt)
			}
		})
	}
}
