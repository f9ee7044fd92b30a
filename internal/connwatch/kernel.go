package connwatch

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"

	"sknock/conns"
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

// Dump implements Conntrack, through the dump package conns ends
// connections from.
func (Kernel) Dump() ([]gate.Conn, error) {
	all, err := conns.System{}.Conns()
	if err != nil {
		return nil, err
	}
	out := make([]gate.Conn, 0, len(all))
	for _, c := range all {
		out = append(out, gate.Conn{
			Proto: c.Orig.Proto,
			Src:   netip.AddrPortFrom(c.Orig.Src.Addr().Unmap(), c.Orig.Src.Port()),
			Dst:   netip.AddrPortFrom(c.Orig.Dst.Addr().Unmap(), c.Orig.Dst.Port()),
		})
	}
	return out, nil
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
