package queue

import (
	"errors"
	"unsafe"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// setReadBuffer sets c's receive buffer to n bytes with SO_RCVBUFFORCE,
// which ignores net.core.rmem_max but needs CAP_NET_ADMIN; without the
// capability it falls back to SO_RCVBUF, which the kernel caps at rmem_max.
func setReadBuffer(c *netlink.Conn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var sockErr error
	if err := raw.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	if sockErr == nil {
		return nil
	}
	if !errors.Is(sockErr, unix.EPERM) {
		return sockErr
	}
	return c.SetReadBuffer(n)
}

// isENOBUFS reports whether err says the socket's receive buffer overran
// and the kernel dropped packets.
func isENOBUFS(err error) bool { return errors.Is(err, unix.ENOBUFS) }

// readFD reads one datagram from the socket fd into b.
func readFD(fd uintptr, b []byte) (int, error) { return unix.Read(int(fd), b) }

// writeFD writes one message to the socket fd.
func writeFD(fd uintptr, b []byte) (int, error) { return unix.Write(int(fd), b) }

// mmsghdr is struct mmsghdr: a message header and the length received.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// datagrams are the headers of one recvmmsg(2): one message and one iovec
// for each fixed slot of a buffer, made once.
type datagrams struct {
	msgs []mmsghdr
	iovs []unix.Iovec
}

// init points the headers at buf's slots of slot bytes.
func (d *datagrams) init(buf []byte, slot int) {
	n := len(buf) / slot
	d.msgs = make([]mmsghdr, n)
	d.iovs = make([]unix.Iovec, n)
	for i := range n {
		d.iovs[i].Base = &buf[i*slot]
		d.iovs[i].SetLen(slot)
		d.msgs[i].hdr.Iov = &d.iovs[i]
		d.msgs[i].hdr.SetIovlen(1)
	}
}

// read takes the datagrams waiting on the socket fd, one a slot, without
// waiting, and returns how many.
func (d *datagrams) read(fd uintptr) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&d.msgs[0])), uintptr(len(d.msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// size returns the length of datagram i of the last read.
func (d *datagrams) size(i int) int { return int(d.msgs[i].n) }
