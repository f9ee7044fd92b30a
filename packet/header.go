package packet

import (
	"encoding/binary"
	"net/netip"
)

// Header offsets and sizes of the wire formats Decode reads.
const (
	ipv4MinHeaderLen = 20
	ipv4TotalLenOff  = 2
	ipv4FragOff      = 6
	ipv4ProtoOff     = 9
	ipv4SrcOff       = 12
	ipv4DstOff       = 16
	ipv4FragMask     = 0x1fff // fragment offset bits of the flags/offset field

	ipv6HeaderLen     = 40
	ipv6PayloadLenOff = 4
	ipv6NextHeaderOff = 6
	ipv6SrcOff        = 8
	ipv6DstOff        = 24

	ipv6HopByHop = 0
	ipv6Routing  = 43
	ipv6Fragment = 44
	ipv6AH       = 51
	ipv6DestOpts = 60
	// ipv6FragHeaderLen is the fixed size of the fragment extension header.
	ipv6FragHeaderLen = 8
	// ipv6FragOffMask selects the 13-bit offset of the fragment header's
	// offset/flags field (already in units of 8 bytes, shifted left by 3).
	ipv6FragOffMask = 0xfff8
	// maxIPv6ExtHeaders bounds the extension header walk; a chain longer
	// than this decodes as unknown.
	maxIPv6ExtHeaders = 8

	tcpMinHeaderLen = 20
	tcpDataOffOff   = 12
	tcpFlagsOff     = 13
	udpHeaderLen    = 8
	udpLengthOff    = 4
)

// Header is the decoded IP and transport header of one packet. Decode fills
// it in place so that one Header serves every packet of a reader.
//
// Family 0 means the packet was malformed or not IP: every field is zero.
// Proto 0 with a non-zero Family means the packet is well-formed IP but its
// transport header is unknown: another protocol than TCP or UDP, a
// non-first fragment, an IPv6 extension header chain too long or cut off by
// the copy range.
type Header struct {
	// Family is 4 or 6, or 0 when the packet is unknown.
	Family uint8
	// Proto is TCP or UDP, or 0 when the transport is unknown.
	Proto Proto
	// Src and Dst are the IP source and destination addresses.
	Src, Dst netip.Addr
	// SrcPort and DstPort are the transport ports; zero when Proto is 0.
	SrcPort, DstPort uint16
	// TCPFlags is the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04,
	// PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80); zero for UDP.
	TCPFlags uint8
	// Payload is the transport payload as far as it was captured. It
	// aliases the packet passed to Decode and is valid only as long as that
	// packet is.
	Payload []byte
}

// TCP flag bits of Header.TCPFlags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// Decode fills h from pkt, an IPv4 or IPv6 packet starting at the IP
// header, as NFQUEUE hands it over. It never allocates and never fails: a
// malformed packet decodes to Family 0, an unknown transport to Proto 0.
//
// A packet cut short by the queue's copy range still decodes as long as the
// transport header's first bytes (ports, and TCP flags) were captured; the
// payload is then what was captured.
func (h *Header) Decode(pkt []byte) {
	*h = Header{}
	if len(pkt) == 0 {
		return
	}
	switch pkt[0] >> 4 {
	case 4:
		h.decodeIPv4(pkt)
	case 6:
		h.decodeIPv6(pkt)
	}
}

func (h *Header) decodeIPv4(pkt []byte) {
	if len(pkt) < ipv4MinHeaderLen {
		return
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < ipv4MinHeaderLen || len(pkt) < ihl {
		return
	}
	// A total length of zero is how the kernel marks IPv4 BIG TCP packets;
	// otherwise the total length trims link-layer padding.
	total := int(binary.BigEndian.Uint16(pkt[ipv4TotalLenOff:]))
	if total != 0 {
		if total < ihl {
			return
		}
		if total < len(pkt) {
			pkt = pkt[:total]
		}
	}
	h.Family = 4
	h.Src = netip.AddrFrom4([4]byte(pkt[ipv4SrcOff : ipv4SrcOff+4]))
	h.Dst = netip.AddrFrom4([4]byte(pkt[ipv4DstOff : ipv4DstOff+4]))
	if binary.BigEndian.Uint16(pkt[ipv4FragOff:])&ipv4FragMask != 0 {
		return // non-first fragment: no transport header
	}
	h.decodeTransport(pkt[ipv4ProtoOff], pkt[ihl:])
}

func (h *Header) decodeIPv6(pkt []byte) {
	if len(pkt) < ipv6HeaderLen {
		return
	}
	// A payload length of zero is a jumbogram (or BIG TCP); otherwise it
	// trims link-layer padding.
	if plen := int(binary.BigEndian.Uint16(pkt[ipv6PayloadLenOff:])); plen != 0 && ipv6HeaderLen+plen < len(pkt) {
		pkt = pkt[:ipv6HeaderLen+plen]
	}
	h.Family = 6
	h.Src = netip.AddrFrom16([16]byte(pkt[ipv6SrcOff : ipv6SrcOff+16]))
	h.Dst = netip.AddrFrom16([16]byte(pkt[ipv6DstOff : ipv6DstOff+16]))

	next, rest := pkt[ipv6NextHeaderOff], pkt[ipv6HeaderLen:]
	for walked := 0; ; walked++ {
		var extLen int
		switch next {
		case ipv6HopByHop, ipv6Routing, ipv6DestOpts:
			if len(rest) < 2 {
				return
			}
			extLen = (int(rest[1]) + 1) * 8
		case ipv6AH:
			if len(rest) < 2 {
				return
			}
			extLen = (int(rest[1]) + 2) * 4
		case ipv6Fragment:
			if len(rest) < ipv6FragHeaderLen {
				return
			}
			if binary.BigEndian.Uint16(rest[2:])&ipv6FragOffMask != 0 {
				return // non-first fragment: no transport header
			}
			extLen = ipv6FragHeaderLen
		default:
			h.decodeTransport(next, rest)
			return
		}
		if len(rest) < extLen || walked == maxIPv6ExtHeaders {
			return // cut short, or longer than we walk: transport unknown
		}
		next, rest = rest[0], rest[extLen:]
	}
}

// decodeTransport fills the transport fields from seg, the transport
// header and what follows, or leaves Proto 0. A malformed TCP or UDP header
// makes the whole packet unknown.
func (h *Header) decodeTransport(proto uint8, seg []byte) {
	switch Proto(proto) {
	case TCP:
		if len(seg) < tcpMinHeaderLen {
			return
		}
		off := int(seg[tcpDataOffOff]>>4) * 4
		if off < tcpMinHeaderLen {
			*h = Header{}
			return
		}
		h.Proto = TCP
		h.SrcPort = binary.BigEndian.Uint16(seg)
		h.DstPort = binary.BigEndian.Uint16(seg[2:])
		h.TCPFlags = seg[tcpFlagsOff]
		// Options running past the captured bytes leave an empty payload.
		h.Payload = seg[min(off, len(seg)):]
	case UDP:
		if len(seg) < udpHeaderLen {
			return
		}
		ulen := int(binary.BigEndian.Uint16(seg[udpLengthOff:]))
		if ulen < udpHeaderLen {
			*h = Header{}
			return
		}
		h.Proto = UDP
		h.SrcPort = binary.BigEndian.Uint16(seg)
		h.DstPort = binary.BigEndian.Uint16(seg[2:])
		// A UDP length beyond the capture means the copy range cut the
		// payload; take what was captured.
		h.Payload = seg[udpHeaderLen:min(ulen, len(seg))]
	}
}
