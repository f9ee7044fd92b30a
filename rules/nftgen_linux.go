package rules

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// nf_tables netlink constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const (
	nfnlSubsysNFTables = 10     // NFNL_SUBSYS_NFTABLES
	nftMsgGetGen       = 16     // NFT_MSG_GETGEN
	nftaGenID          = 1      // NFTA_GEN_ID, u32 big endian
	nfgenmsgLen        = 4      // struct nfgenmsg: family, version, res_id
	nlmsgHdrLen        = 16     // struct nlmsghdr
	nlaHdrLen          = 4      // struct nlattr
	nlaTypeMask        = 0x3fff // NLA_TYPE_MASK: without NLA_F_NESTED, NLA_F_NET_BYTEORDER
)

// errGenMalformed is a generation answer that does not parse.
var errGenMalformed = errors.New("nf_tables generation: malformed answer")

// GenerationReader reads the nf_tables ruleset generation of the network
// namespace it was opened in: the kernel increments it with every
// committed change to any nftables table, iptables-nft's included, before
// the change reaches a packet. It keeps a netlink socket of its own and
// fixed buffers, so a read is one request and one answer and allocates
// nothing (the gate reader asks at the first grant of each batch of
// packets; see Keeper.GrantPassGeneration). It is not safe for
// concurrent use.
//
// It is written against the socket directly, not through
// mdlayher/netlink (the daemon's netlink library), because that
// library's Execute allocates the request and every answer.
type GenerationReader struct {
	fd  int
	seq uint32
	req [nlmsgHdrLen + nfgenmsgLen]byte
	buf [512]byte
}

// OpenGenerationReader opens a GenerationReader in the caller's network
// namespace.
func OpenGenerationReader() (*GenerationReader, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nf_tables generation: socket: %w", err)
	}
	r := &GenerationReader{fd: fd}
	// The kernel answers while the request is being sent; the timeout
	// only bounds a read that finds no answer (a bug, not a wait).
	tv := unix.Timeval{Usec: 100_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nf_tables generation: receive timeout: %w", err)
	}
	if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nf_tables generation: connect: %w", err)
	}
	binary.NativeEndian.PutUint32(r.req[0:], uint32(len(r.req)))
	binary.NativeEndian.PutUint16(r.req[4:], nfnlSubsysNFTables<<8|nftMsgGetGen)
	binary.NativeEndian.PutUint16(r.req[6:], unix.NLM_F_REQUEST)
	// The nfgenmsg stays zero: AF_UNSPEC, NFNETLINK_V0, res_id 0.
	return r, nil
}

// Generation returns the current ruleset generation.
func (r *GenerationReader) Generation() (uint32, error) {
	r.seq++
	binary.NativeEndian.PutUint32(r.req[8:], r.seq)
	for {
		_, err := unix.Write(r.fd, r.req[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("nf_tables generation: send: %w", err)
		}
		break
	}
	for {
		n, err := unix.Read(r.fd, r.buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("nf_tables generation: receive: %w", err)
		}
		gen, found, err := parseGenAnswer(r.buf[:n], r.seq)
		if err != nil || found {
			return gen, err
		}
		// An answer to an earlier request that timed out: read on.
	}
}

// Close closes the reader's socket.
func (r *GenerationReader) Close() error { return unix.Close(r.fd) }

// parseGenAnswer finds the answer to request seq in the datagram b: the
// generation, or the kernel's error.
func parseGenAnswer(b []byte, seq uint32) (gen uint32, found bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return 0, false, errGenMalformed
		}
		typ, msgSeq, msg := ne.Uint16(b[4:]), ne.Uint32(b[8:]), b[nlmsgHdrLen:l]
		b = b[min(len(b), (l+3)&^3):]
		if msgSeq != seq {
			continue
		}
		if typ == unix.NLMSG_ERROR {
			if len(msg) < 4 {
				return 0, true, errGenMalformed
			}
			return 0, true, fmt.Errorf("nf_tables generation: %w", unix.Errno(-int32(ne.Uint32(msg))))
		}
		if len(msg) < nfgenmsgLen {
			return 0, true, errGenMalformed
		}
		for a := msg[nfgenmsgLen:]; len(a) >= nlaHdrLen; {
			al := int(ne.Uint16(a[0:]))
			if al < nlaHdrLen || al > len(a) {
				return 0, true, errGenMalformed
			}
			if ne.Uint16(a[2:])&nlaTypeMask == nftaGenID && al >= nlaHdrLen+4 {
				return binary.BigEndian.Uint32(a[nlaHdrLen:]), true, nil
			}
			a = a[min(len(a), (al+3)&^3):]
		}
		return 0, true, fmt.Errorf("nf_tables generation: no NFTA_GEN_ID in the answer")
	}
	return 0, false, nil
}
