//go:build !linux

package client

import (
	"context"
	"net"
	"net/netip"
	"time"
)

// startConnect begins a TCP connection to addr. Elsewhere than on Linux
// it dials on a goroutine, so the knock may overtake the SYN: a port the
// knock opened may then be reported as open already, never the reverse.
func startConnect(ctx context.Context, addr netip.AddrPort) <-chan dialResult {
	out := make(chan dialResult, 1)
	go func() {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr.String())
		out <- dialResult{conn: conn, err: err, at: time.Now()}
	}()
	return out
}
