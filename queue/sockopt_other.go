//go:build !linux

package queue

import "github.com/mdlayher/netlink"

// setReadBuffer sets c's receive buffer to n bytes.
func setReadBuffer(c *netlink.Conn, n int) error { return c.SetReadBuffer(n) }

// isENOBUFS reports false: NFQUEUE exists only on Linux.
func isENOBUFS(error) bool { return false }
