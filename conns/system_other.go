//go:build !linux

package conns

import (
	"errors"
	"net/netip"
)

// System is the running kernel's Kernel; only Linux has one.
type System struct {
	// RejectLabel is the label Label sets.
	RejectLabel uint8
}

var errUnsupported = errors.New("conns: ending connections needs Linux")

// Conns implements Kernel.
func (System) Conns() ([]Conn, error) { return nil, errUnsupported }

// Destroy implements Kernel.
func (System) Destroy(local, remote netip.AddrPort) error { return errUnsupported }

// Forget implements Kernel.
func (System) Forget(c Conn) error { return errUnsupported }

// Label implements Kernel.
func (System) Label(c Conn) error { return errUnsupported }
