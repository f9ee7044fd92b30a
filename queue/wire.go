package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
)

// The netlink and nfnetlink_queue wire format the socket reads and writes
// itself (linux/netlink.h, linux/netfilter/nfnetlink_queue.h). Netlink
// headers are in host byte order, nfnetlink_queue's values big-endian.
const (
	nlHeaderLen  = 16 // struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32
	nlAttrLen    = 4  // struct nlattr: len u16, type u16
	nfGenLen     = 4  // struct nfgenmsg: family u8, version u8, res_id be16 (the queue)
	nlAttrTypeOf = 0x3fff

	nlmsgError  = 0x2 // NLMSG_ERROR: an errno (0: an ack) and the request's header
	nlmFRequest = 0x1
	nlmFAck     = 0x4

	nfnlSubsysQueue  = 3
	nfqnlMsgPacket   = nfnlSubsysQueue << 8 // NFQNL_MSG_PACKET is message 0
	nfqnlMsgVerdict  = nfnlSubsysQueue<<8 | 1
	nfqnlMsgConfig   = nfnlSubsysQueue<<8 | 2
	nfqnlMsgVerdictB = nfnlSubsysQueue<<8 | 3 // NFQNL_MSG_VERDICT_BATCH

	nfqaPacketHdr  = 1  // packet_id be32, hw_protocol be16, hook u8
	nfqaVerdictHdr = 2  // verdict be32, id be32
	nfqaMark       = 3  // be32
	nfqaPayload    = 10 // the packet from its network header on
	nfqaCapLen     = 16 // be32 original length, sent only when the copy was cut

	nfqaCfgCmd         = 1 // command u8, pad u8, pf be16
	nfqaCfgParams      = 2 // copy_range be32, copy_mode u8
	nfqaCfgQueueMaxLen = 3 // be32
	nfqnlCfgCmdBind    = 1
	nfqnlCfgCmdUnbind  = 2
	nfqnlCopyPacket    = 2

	// verdictMaxLen is a verdict message with a mark: header, nfgenmsg,
	// the verdict attribute (4+8) and the mark attribute (4+4).
	verdictMaxLen = nlHeaderLen + nfGenLen + 12 + 8

	// packetMsgOverhead bounds the bytes of a packet message besides the
	// packet itself: the headers and every attribute the kernel adds
	// without extra configuration flags (ids, mark, timestamp, interfaces,
	// hardware address, VLAN, priority, lengths) come to about 200.
	packetMsgOverhead = 1024
)

// ErrMalformed is a message from the kernel that does not parse.
var ErrMalformed = errors.New("queue: malformed netlink message")

// ErrVerdictRefused is the kernel's answer to a verdict it could not apply,
// which arrives later in the receive stream.
var ErrVerdictRefused = errors.New("queue: the kernel refused a verdict")

// nlMessage is one netlink message of a datagram.
type nlMessage struct {
	typ  uint16
	seq  uint32
	data []byte // after the header
}

// nextMessage splits the first netlink message off b. ok is false when b
// holds no more; err reports a malformed rest.
func nextMessage(b []byte) (m nlMessage, rest []byte, ok bool, err error) {
	if len(b) < nlHeaderLen {
		return m, nil, false, nil
	}
	n := int(binary.NativeEndian.Uint32(b))
	if n < nlHeaderLen || n > len(b) {
		return m, nil, false, ErrMalformed
	}
	m = nlMessage{
		typ:  binary.NativeEndian.Uint16(b[4:]),
		seq:  binary.NativeEndian.Uint32(b[8:]),
		data: b[nlHeaderLen:n],
	}
	return m, b[min(align4(n), len(b)):], true, nil
}

// align4 rounds n up to netlink's 4-byte alignment.
func align4(n int) int { return (n + 3) &^ 3 }

// errnoOf returns the errno of an NLMSG_ERROR message's body (zero for an
// ack); ok is false when the body is too short.
func errnoOf(data []byte) (errno syscall.Errno, ok bool) {
	if len(data) < 4 {
		return 0, false
	}
	return syscall.Errno(-int32(binary.NativeEndian.Uint32(data))), true
}

// appendPackets appends the queued packets among the netlink messages in
// b to pkts; their Data points into b. It returns the first problem it
// met: an error the kernel sent back (for a verdict it refused), a
// malformed message or a packet without an id. It allocates only for an
// error.
func appendPackets(pkts []Packet, b []byte) ([]Packet, error) {
	var first error
	for {
		m, rest, ok, err := nextMessage(b)
		if err != nil {
			first = firstError(first, err)
		}
		if !ok {
			return pkts, first
		}
		b = rest
		switch m.typ {
		case nfqnlMsgPacket:
			p, err := parsePacket(m.data)
			if err != nil {
				first = firstError(first, err)
				if p.ID == 0 {
					continue
				}
				// Its id is known: it must get a verdict of its own
				// (without data it decodes as unknown and is dropped), or
				// a later batch verdict would settle it unseen.
				p = Packet{ID: p.ID}
			}
			pkts = append(pkts, p)
		case nlmsgError:
			if errno, ok := errnoOf(m.data); !ok {
				first = firstError(first, ErrMalformed)
			} else if errno != 0 {
				first = firstError(first, fmt.Errorf("%w: %w", ErrVerdictRefused, errno))
			}
		}
	}
}

// firstError returns first, or err when first is nil.
func firstError(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// parsePacket decodes an NFQNL_MSG_PACKET body: nfgenmsg, then attributes.
// On an error the returned Packet still carries the id if one was read
// (the kernel's packet ids start at 1, so zero means none).
func parsePacket(b []byte) (Packet, error) {
	var p Packet
	if len(b) < nfGenLen {
		return p, ErrMalformed
	}
	b = b[nfGenLen:]
	hasID := false
	capLen := -1
	for len(b) >= nlAttrLen {
		n := int(binary.NativeEndian.Uint16(b))
		if n < nlAttrLen || n > len(b) {
			return p, ErrMalformed
		}
		typ, val := binary.NativeEndian.Uint16(b[2:])&nlAttrTypeOf, b[nlAttrLen:n]
		b = b[min(align4(n), len(b)):]
		switch typ {
		case nfqaPacketHdr:
			if len(val) < 4 {
				return p, ErrMalformed
			}
			p.ID, hasID = binary.BigEndian.Uint32(val), true
		case nfqaMark:
			if len(val) >= 4 {
				p.Mark = binary.BigEndian.Uint32(val)
			}
		case nfqaPayload:
			p.Data = val
		case nfqaCapLen:
			if len(val) >= 4 {
				capLen = int(binary.BigEndian.Uint32(val))
			}
		}
	}
	if !hasID {
		return p, ErrNoPacketID
	}
	// The kernel sends the original length only when it cut the packet.
	p.Truncated = capLen > len(p.Data)
	return p, nil
}

// putVerdict writes into b (at least verdictMaxLen bytes) a verdict
// message for queue and returns its length: NFQNL_MSG_VERDICT for packet
// id, or with batch NFQNL_MSG_VERDICT_BATCH for every waiting packet up to
// id; with withMark it sets the packet mark too.
func putVerdict(b []byte, queue uint16, id uint32, verdict int, mark uint32, withMark, batch bool) int {
	n := nlHeaderLen + nfGenLen + nlAttrLen + 8
	if withMark {
		n += nlAttrLen + 4
	}
	typ := uint16(nfqnlMsgVerdict)
	if batch {
		typ = nfqnlMsgVerdictB
	}
	ne, be := binary.NativeEndian, binary.BigEndian
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], nlmFRequest)
	ne.PutUint32(b[8:], 0)  // sequence: verdicts are not acknowledged
	ne.PutUint32(b[12:], 0) // port id: the kernel fills it in
	b[16], b[17] = 0, 0     // AF_UNSPEC, NFNETLINK_V0
	be.PutUint16(b[18:], queue)
	ne.PutUint16(b[20:], nlAttrLen+8)
	ne.PutUint16(b[22:], nfqaVerdictHdr)
	be.PutUint32(b[24:], uint32(verdict))
	be.PutUint32(b[28:], id)
	if withMark {
		ne.PutUint16(b[32:], nlAttrLen+4)
		ne.PutUint16(b[34:], nfqaMark)
		be.PutUint32(b[36:], mark)
	}
	return n
}
