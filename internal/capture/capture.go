// Package capture reads the UDP datagrams out of a packet capture: the
// pcap and pcapng files that tcpdump, tshark and Wireshark write, over
// Ethernet (with VLAN tags), Linux cooked captures (tcpdump -i any, v1
// and v2), raw IP and BSD loopback. It is for `sknock inspect`, which
// judges the knocks in a capture; it decodes just enough of each frame to
// find IPv4 or IPv6 and UDP, and skips everything else, counted.
//
// It is hand-written rather than gopacket's pcapgo and layers for the
// reason the STUN codec (knock/client/stun) is: sknock is one binary, and
// every knock starts it, so what it links costs start-up time on every
// knock; gopacket's layer registry alone is initialised at each start.
// The few hundred lines here read only what inspect needs, and the tests
// hold them to captures that tcpdump and tshark wrote (testdata).
package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// ErrFormat is returned (wrapped) for data that is not a pcap or pcapng
// capture, or is cut short or inconsistent.
var ErrFormat = errors.New("not a readable pcap or pcapng capture")

// Datagram is one UDP datagram found in a capture.
type Datagram struct {
	// Frame is the frame's number in the capture, from 1, as Wireshark
	// and tcpdump -# count them.
	Frame int
	// Time is when it was captured; zero when the capture did not say
	// (a pcapng simple packet block).
	Time time.Time
	// Src and Dst are the IP addresses and UDP ports.
	Src, Dst netip.AddrPort
	// Payload is the UDP payload as captured.
	Payload []byte
	// Truncated reports that the capture holds less of the datagram than
	// its UDP length says (the snapshot length was too small).
	Truncated bool
}

// Stats counts what a capture held besides UDP datagrams.
type Stats struct {
	// Frames is every frame read.
	Frames int
	// NotUDP are frames of other protocols, link types or ether types.
	NotUDP int
	// Fragments are IP fragments, which are not reassembled.
	Fragments int
}

// Is reports whether data starts like a pcap or pcapng capture.
func Is(data []byte) bool {
	if len(data) < 4 {
		return false
	}
	switch binary.BigEndian.Uint32(data) {
	case pcapMicroBE, pcapMicroLE, pcapNanoBE, pcapNanoLE, pcapngSHB:
		return true
	}
	return false
}

// Read returns the UDP datagrams of a pcap or pcapng capture, in order.
// Payloads alias data.
func Read(data []byte) ([]Datagram, Stats, error) {
	if !Is(data) {
		return nil, Stats{}, fmt.Errorf("%w: unknown magic number", ErrFormat)
	}
	if binary.BigEndian.Uint32(data) == pcapngSHB {
		return readPcapng(data)
	}
	return readPcap(data)
}

// Magic numbers, read big-endian.
const (
	pcapMicroBE = 0xa1b2c3d4
	pcapMicroLE = 0xd4c3b2a1
	pcapNanoBE  = 0xa1b23c4d
	pcapNanoLE  = 0x4d3cb2a1
	pcapngSHB   = 0x0a0d0d0a
)

// maxFrame bounds one frame's captured length (pcap's own limit for
// most link types is 256 KiB).
const maxFrame = 1 << 20

func readPcap(data []byte) ([]Datagram, Stats, error) {
	var st Stats
	if len(data) < 24 {
		return nil, st, fmt.Errorf("%w: pcap header cut short", ErrFormat)
	}
	var order binary.ByteOrder = binary.BigEndian
	magic := binary.BigEndian.Uint32(data)
	if magic == pcapMicroLE || magic == pcapNanoLE {
		order = binary.LittleEndian
	}
	unit := time.Microsecond
	if magic == pcapNanoBE || magic == pcapNanoLE {
		unit = time.Nanosecond
	}
	link := order.Uint32(data[20:]) & 0xffff // the upper bits may hold FCS flags
	var out []Datagram
	for off := 24; off < len(data); {
		if len(data)-off < 16 {
			return out, st, fmt.Errorf("%w: record header of frame %d cut short", ErrFormat, st.Frames+1)
		}
		sec, frac := order.Uint32(data[off:]), order.Uint32(data[off+4:])
		incl := order.Uint32(data[off+8:])
		off += 16
		if incl > maxFrame || int(incl) > len(data)-off {
			return out, st, fmt.Errorf("%w: frame %d: captured length %d past the end of the file", ErrFormat, st.Frames+1, incl)
		}
		st.Frames++
		at := time.Unix(int64(sec), int64(frac)*int64(unit))
		out = st.add(out, link, data[off:off+int(incl)], st.Frames, at)
		off += int(incl)
	}
	return out, st, nil
}

// pcapng block types.
const (
	blockIDB = 1
	blockSPB = 3
	blockEPB = 6
)

// iface is a pcapng interface: its link type and timestamp unit.
type iface struct {
	link uint32
	// tick is the timestamp unit: 10^-exp or 2^-exp seconds.
	pow2 bool
	exp  uint8
}

func (i iface) time(ts uint64) time.Time {
	var perSec uint64
	switch {
	case i.pow2 && i.exp < 64:
		perSec = 1 << i.exp
	case !i.pow2 && i.exp <= 19:
		perSec = uint64(math.Pow10(int(i.exp)))
	default:
		return time.Time{}
	}
	sec := ts / perSec
	nsec := (ts % perSec) * uint64(time.Second) / perSec
	if sec > math.MaxInt64/2 {
		return time.Time{}
	}
	return time.Unix(int64(sec), int64(nsec))
}

func readPcapng(data []byte) ([]Datagram, Stats, error) {
	var st Stats
	var out []Datagram
	var order binary.ByteOrder = binary.LittleEndian
	var ifaces []iface
	for off := 0; off < len(data); {
		if len(data)-off < 12 {
			return out, st, fmt.Errorf("%w: pcapng block cut short at byte %d", ErrFormat, off)
		}
		if binary.BigEndian.Uint32(data[off:]) == pcapngSHB {
			// A section header sets the byte order of what follows.
			switch binary.BigEndian.Uint32(data[off+8:]) {
			case 0x1a2b3c4d:
				order = binary.BigEndian
			case 0x4d3c2b1a:
				order = binary.LittleEndian
			default:
				return out, st, fmt.Errorf("%w: pcapng section header with a bad byte-order magic", ErrFormat)
			}
			ifaces = nil
		}
		typ, total := order.Uint32(data[off:]), order.Uint32(data[off+4:])
		if total < 12 || total%4 != 0 || int64(total) > int64(len(data)-off) {
			return out, st, fmt.Errorf("%w: pcapng block at byte %d has length %d", ErrFormat, off, total)
		}
		body := data[off+8 : off+int(total)-4]
		off += int(total)
		switch typ {
		case blockIDB:
			if len(body) < 8 {
				return out, st, fmt.Errorf("%w: interface description block cut short", ErrFormat)
			}
			ifc := iface{link: uint32(order.Uint16(body)), exp: 6}
			readOptions(order, body[8:], func(code uint16, val []byte) {
				if code == 9 && len(val) == 1 { // if_tsresol
					ifc.pow2, ifc.exp = val[0]&0x80 != 0, val[0]&0x7f
				}
			})
			ifaces = append(ifaces, ifc)
		case blockEPB:
			if len(body) < 20 {
				return out, st, fmt.Errorf("%w: enhanced packet block cut short", ErrFormat)
			}
			id, capLen := order.Uint32(body), order.Uint32(body[12:])
			if int(id) >= len(ifaces) || capLen > maxFrame || int(capLen) > len(body)-20 {
				return out, st, fmt.Errorf("%w: enhanced packet block %d: unknown interface or bad length", ErrFormat, st.Frames+1)
			}
			st.Frames++
			ts := uint64(order.Uint32(body[4:]))<<32 | uint64(order.Uint32(body[8:]))
			out = st.add(out, ifaces[id].link, body[20:20+capLen], st.Frames, ifaces[id].time(ts))
		case blockSPB:
			if len(body) < 4 || len(ifaces) == 0 {
				return out, st, fmt.Errorf("%w: simple packet block without an interface", ErrFormat)
			}
			st.Frames++
			frame := body[4:]
			if orig := order.Uint32(body); int(orig) < len(frame) {
				frame = frame[:orig]
			}
			out = st.add(out, ifaces[0].link, frame, st.Frames, time.Time{})
		}
	}
	return out, st, nil
}

// readOptions calls f with each pcapng option until opt_endofopt.
func readOptions(order binary.ByteOrder, opts []byte, f func(code uint16, val []byte)) {
	for len(opts) >= 4 {
		code, n := order.Uint16(opts), int(order.Uint16(opts[2:]))
		if code == 0 || len(opts)-4 < n {
			return
		}
		f(code, opts[4:4+n])
		padded := 4 + (n+3)&^3
		if padded > len(opts) {
			return
		}
		opts = opts[padded:]
	}
}

// Link types (https://www.tcpdump.org/linktypes.html).
const (
	linkNull     = 0
	linkEthernet = 1
	linkRawBSD   = 12
	linkRawBSD2  = 14
	linkRaw      = 101
	linkLoop     = 108
	linkSLL      = 113
	linkIPv4     = 228
	linkIPv6     = 229
	linkSLL2     = 276
)

// add decodes one frame and appends its UDP datagram, if it is one.
func (st *Stats) add(out []Datagram, link uint32, frame []byte, n int, at time.Time) []Datagram {
	ip, ok := network(link, frame)
	if !ok {
		st.NotUDP++
		return out
	}
	d, status := udp(ip)
	switch status {
	case isUDP:
		d.Frame, d.Time = n, at
		return append(out, d)
	case isFragment:
		st.Fragments++
	default:
		st.NotUDP++
	}
	return out
}

// network returns the IP packet a frame carries.
func network(link uint32, frame []byte) ([]byte, bool) {
	var etherType uint16
	switch link {
	case linkEthernet:
		if len(frame) < 14 {
			return nil, false
		}
		etherType, frame = binary.BigEndian.Uint16(frame[12:]), frame[14:]
		for (etherType == 0x8100 || etherType == 0x88a8) && len(frame) >= 4 {
			etherType, frame = binary.BigEndian.Uint16(frame[2:]), frame[4:]
		}
	case linkSLL:
		if len(frame) < 16 {
			return nil, false
		}
		etherType, frame = binary.BigEndian.Uint16(frame[14:]), frame[16:]
	case linkSLL2:
		if len(frame) < 20 {
			return nil, false
		}
		etherType, frame = binary.BigEndian.Uint16(frame), frame[20:]
	case linkNull, linkLoop:
		if len(frame) < 4 {
			return nil, false
		}
		family := binary.LittleEndian.Uint32(frame)
		if link == linkLoop || family > 0xffff {
			family = binary.BigEndian.Uint32(frame)
		}
		frame = frame[4:]
		switch family {
		case 2:
			etherType = 0x0800
		case 24, 28, 30:
			etherType = 0x86dd
		}
	case linkRaw, linkRawBSD, linkRawBSD2, linkIPv4, linkIPv6:
		return frame, len(frame) > 0
	default:
		return nil, false
	}
	if etherType != 0x0800 && etherType != 0x86dd {
		return nil, false
	}
	return frame, true
}

type udpStatus int

const (
	notUDP udpStatus = iota
	isUDP
	isFragment
)

// udp decodes an IPv4 or IPv6 packet carrying UDP.
func udp(ip []byte) (Datagram, udpStatus) {
	var d Datagram
	if len(ip) == 0 {
		return d, notUDP
	}
	var src, dst netip.Addr
	var payload []byte
	switch ip[0] >> 4 {
	case 4:
		if len(ip) < 20 {
			return d, notUDP
		}
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || len(ip) < ihl {
			return d, notUDP
		}
		if flags := binary.BigEndian.Uint16(ip[6:]); flags&0x3fff != 0 { // MF or an offset
			return d, isFragment
		}
		if ip[9] != 17 {
			return d, notUDP
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		end := min(max(total, ihl), len(ip))
		payload = ip[ihl:end]
	case 6:
		if len(ip) < 40 {
			return d, notUDP
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		next, rest := ip[6], ip[40:]
		if plen := int(binary.BigEndian.Uint16(ip[4:])); plen < len(rest) {
			rest = rest[:plen]
		}
		for next != 17 {
			switch next {
			case 0, 43, 60: // hop-by-hop, routing, destination options
				if len(rest) < 8 || len(rest) < (int(rest[1])+1)*8 {
					return d, notUDP
				}
				next, rest = rest[0], rest[(int(rest[1])+1)*8:]
			case 44:
				return d, isFragment
			default:
				return d, notUDP
			}
		}
		payload = rest
	default:
		return d, notUDP
	}
	if len(payload) < 8 {
		return d, notUDP
	}
	length := int(binary.BigEndian.Uint16(payload[4:]))
	d.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(payload))
	d.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(payload[2:]))
	body := payload[8:]
	switch {
	case length < 8:
	case length-8 > len(body):
		d.Truncated = true
	default:
		body = body[:length-8]
	}
	d.Payload = body
	return d, isUDP
}
