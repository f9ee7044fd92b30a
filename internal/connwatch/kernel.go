package connwatch

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"

	"sknock/gate"
	"sknock/packet"
)

// Kernel is the kernel's conntrack table over netlink
// (github.com/ti-mo/conntrack, already the daemon's).
type Kernel struct{}

// ConnOf returns the original-direction tuple of f, as the gate records
// it (IPv4 unmapped).
func ConnOf(f conntrack.Flow) gate.Conn {
	t := f.TupleOrig
	return gate.Conn{
		Proto: packet.Proto(t.Proto.Protocol),
		Src:   netip.AddrPortFrom(t.IP.SourceAddress.Unmap(), t.Proto.SourcePort),
		Dst:   netip.AddrPortFrom(t.IP.DestinationAddress.Unmap(), t.Proto.DestinationPort),
	}
}

// Dump implements Conntrack.
func (Kernel) Dump() ([]gate.Conn, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return nil, fmt.Errorf("conntrack dump: %w", err)
	}
	conns := make([]gate.Conn, 0, len(flows))
	for _, f := range flows {
		conns = append(conns, ConnOf(f))
	}
	return conns, nil
}

// WatchDestroyed implements Conntrack.
func (Kernel) WatchDestroyed(ctx context.Context, destroyed chan<- gate.Conn) error {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	events := make(chan conntrack.Event, 1024)
	errs, err := c.Listen(events, 1, []netfilter.NetlinkGroup{netfilter.GroupCTDestroy})
	if err != nil {
		return fmt.Errorf("conntrack listen: %w", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			return fmt.Errorf("conntrack events: %w", err)
		case ev := <-events:
			if ev.Flow == nil {
				continue
			}
			select {
			case destroyed <- ConnOf(*ev.Flow):
			case <-ctx.Done():
				return nil
			}
		}
	}
}
