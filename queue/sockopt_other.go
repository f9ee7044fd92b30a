//go:build !linux

package queue

import (
	"errors"

	"github.com/mdlayher/netlink"
)

// setReadBuffer sets c's receive buffer to n bytes.
func setReadBuffer(c *netlink.Conn, n int) error { return c.SetReadBuffer(n) }

// isENOBUFS reports false: NFQUEUE exists only on Linux.
func isENOBUFS(error) bool { return false }

// readFD reports errors.ErrUnsupported: NFQUEUE exists only on Linux.
func readFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }

// writeFD reports errors.ErrUnsupported: NFQUEUE exists only on Linux.
func writeFD(uintptr, []byte) (int, error) { return 0, errors.ErrUnsupported }

// datagrams reads nothing: NFQUEUE exists only on Linux.
type datagrams struct{}

func (*datagrams) init([]byte, int)          {}
func (*datagrams) read(uintptr) (int, error) { return 0, errors.ErrUnsupported }
func (*datagrams) size(int) int              { return 0 }
