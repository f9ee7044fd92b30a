//go:build linux

package conns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"

	"sknock/packet"
)

// System is the running kernel's Kernel, in the caller's network
// namespace: conntrack over netlink (github.com/ti-mo/conntrack) and
// SOCK_DESTROY over NETLINK_SOCK_DIAG (github.com/mdlayher/netlink). It
// needs CAP_NET_ADMIN, and a kernel built with CONFIG_INET_DIAG_DESTROY.
type System struct {
	// RejectLabel is the label Label sets: the rules' reject label
	// (rules.Config.RejectLabel, 0-127).
	RejectLabel uint8
}

var _ Kernel = System{}

// Conns implements Kernel.
func (System) Conns() ([]Conn, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump: %w", err)
	}
	out := make([]Conn, 0, len(flows))
	for _, f := range flows {
		out = append(out, Conn{Orig: tupleOf(f.TupleOrig), Reply: tupleOf(f.TupleReply), Zone: f.Zone})
	}
	return out, nil
}

// tupleOf turns conntrack's tuple into a Tuple.
func tupleOf(t conntrack.Tuple) Tuple {
	return Tuple{
		Proto: packet.Proto(t.Proto.Protocol),
		Src:   netip.AddrPortFrom(t.IP.SourceAddress, t.Proto.SourcePort),
		Dst:   netip.AddrPortFrom(t.IP.DestinationAddress, t.Proto.DestinationPort),
	}
}

// conntrackTuple turns a Tuple back into conntrack's.
func conntrackTuple(t Tuple, zone uint16) conntrack.Tuple {
	return conntrack.Tuple{
		IP:    conntrack.IPTuple{SourceAddress: t.Src.Addr(), DestinationAddress: t.Dst.Addr()},
		Proto: conntrack.ProtoTuple{Protocol: uint8(t.Proto), SourcePort: t.Src.Port(), DestinationPort: t.Dst.Port()},
		Zone:  zone,
	}
}

// Label implements Kernel: a conntrack update that sets the reject label
// and leaves the others (CTA_LABELS with CTA_LABELS_MASK).
func (s System) Label(cn Conn) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	labels := labelBits(s.RejectLabel)
	f := conntrack.Flow{TupleOrig: conntrackTuple(cn.Orig, cn.Zone), Zone: cn.Zone, Labels: labels, LabelsMask: labels}
	if err := c.Update(f); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return ErrNoLabel
		}
		return err
	}
	return nil
}

// labelBits returns the 128 bits of conntrack labels with label n set, as
// the kernel keeps them: an array of unsigned longs, in the machine's
// byte order.
func labelBits(n uint8) []byte {
	b := make([]byte, 16)
	word := int(n/64) * 8
	binary.NativeEndian.PutUint64(b[word:], binary.NativeEndian.Uint64(b[word:])|1<<(n%64))
	return b
}

// Forget implements Kernel.
func (System) Forget(cn Conn) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	f := conntrack.Flow{TupleOrig: conntrackTuple(cn.Orig, cn.Zone), TupleReply: conntrackTuple(cn.Reply, cn.Zone), Zone: cn.Zone}
	if err := c.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// inetDiagNoCookie is INET_DIAG_NOCOOKIE: match the socket by its tuple.
const inetDiagNoCookie = 0xffffffff

// Destroy implements Kernel: one SOCK_DESTROY request (struct
// inet_diag_req_v2) for the TCP socket from local to remote.
func (System) Destroy(local, remote netip.AddrPort) error {
	c, err := netlink.Dial(unix.NETLINK_INET_DIAG, nil)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer c.Close()
	req := netlink.Message{
		Header: netlink.Header{Type: unix.SOCK_DESTROY, Flags: netlink.Request | netlink.Acknowledge},
		Data:   destroyRequest(local, remote),
	}
	if _, err := c.Execute(req); err != nil {
		// ENOENT: no socket. EINVAL: the lookup found only the listening
		// socket of the port (measured on 6.18: the kernel refuses to
		// destroy it that way, and it lives on); the connection is gone
		// or was never local.
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			return ErrNoSocket
		}
		return fmt.Errorf("sock_diag destroy %s->%s: %w", local, remote, err)
	}
	return nil
}

// destroyRequest is struct inet_diag_req_v2 naming the TCP socket from
// local to remote: family, protocol, ext, pad, states, then struct
// inet_diag_sockid (ports and addresses in network order, interface,
// cookie). An IPv4 pair goes as AF_INET, which also finds dual-stack
// sockets holding v4-mapped addresses.
func destroyRequest(local, remote netip.AddrPort) []byte {
	b := make([]byte, 56)
	family := byte(unix.AF_INET6)
	if local.Addr().Unmap().Is4() {
		family = unix.AF_INET
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	}
	b[0], b[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(b[4:], 0xffffffff) // every state
	binary.BigEndian.PutUint16(b[8:], local.Port())
	binary.BigEndian.PutUint16(b[10:], remote.Port())
	putAddr(b[12:28], local.Addr())
	putAddr(b[28:44], remote.Addr())
	// b[44:48]: any interface.
	binary.NativeEndian.PutUint32(b[48:], inetDiagNoCookie)
	binary.NativeEndian.PutUint32(b[52:], inetDiagNoCookie)
	return b
}

// putAddr writes a into the 16-byte field: IPv4 in its first 4 bytes.
func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}
