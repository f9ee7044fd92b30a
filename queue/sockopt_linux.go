package queue

import (
	"errors"

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
