// Package packettest builds IP packets for tests: TCP and UDP over IPv4
// or IPv6, as NFQUEUE hands them over (starting at the IP header).
package packettest

import (
	"encoding/binary"
	"net/netip"

	"sknock/packet"
)

// TCP returns a TCP header (20 bytes, no options) with the given ports and
// flags, followed by payload. Checksums are left zero: readers never check
// them (the kernel did).
func TCP(srcPort, dstPort uint16, flags uint8, payload []byte) []byte {
	b := make([]byte, 20, 20+len(payload))
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	b[12] = 5 << 4 // data offset: 5 words
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535) // window
	return append(b, payload...)
}

// UDP returns a UDP header with the given ports and a correct length,
// followed by payload.
func UDP(srcPort, dstPort uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	return append(b, payload...)
}

// IP returns an IPv4 (20-byte header) or IPv6 (40-byte header) packet,
// by the family of src, from src to dst carrying transport as protocol
// proto. src and dst must be of the same family.
func IP(src, dst netip.Addr, proto packet.Proto, transport []byte) []byte {
	if src.Is4() {
		b := make([]byte, 20, 20+len(transport))
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], uint16(20+len(transport)))
		b[8] = 64 // TTL
		b[9] = byte(proto)
		s, d := src.As4(), dst.As4()
		copy(b[12:], s[:])
		copy(b[16:], d[:])
		return append(b, transport...)
	}
	b := make([]byte, 40, 40+len(transport))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(transport)))
	b[6] = byte(proto)
	b[7] = 64 // hop limit
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, transport...)
}

// TCPPacket returns an IP packet from src:srcPort to dst:dstPort carrying a
// TCP segment with flags (packet.TCPSyn for a connection attempt).
func TCPPacket(src netip.Addr, srcPort uint16, dst netip.Addr, dstPort uint16, flags uint8) []byte {
	return IP(src, dst, packet.TCP, TCP(srcPort, dstPort, flags, nil))
}

// UDPPacket returns an IP packet from src:srcPort to dst:dstPort carrying a
// UDP datagram with payload.
func UDPPacket(src netip.Addr, srcPort uint16, dst netip.Addr, dstPort uint16, payload []byte) []byte {
	return IP(src, dst, packet.UDP, UDP(srcPort, dstPort, payload))
}
