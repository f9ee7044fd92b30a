// Package conns ends the tracked connections that ended grants let in,
// without any mark that other tools' rules could rewrite: a connection to
// a local socket is ended by the kernel's socket destroy (SOCK_DESTROY
// over NETLINK_SOCK_DIAG, what `ss -K` does), which resets the client at
// once; any other (a forwarded one, a port published from a container by
// DNAT, or a UDP flow) has the reject label set on its conntrack entry,
// after which the gate's filter chain refuses every later packet of the
// connection in either direction with the kernel's closed-port answer (a
// reset to whichever end speaks next). An entry created while no rule
// used labels (before sknockd started, or on a host that forwarded
// nothing and protected TCP alone, where the rules name no label: see
// rules.Config.Labels) has no room for one: it is deleted instead, after which
// the gate's rules refuse the client's next packets (a TCP segment that
// is neither a SYN nor of a tracked connection never reaches a protected
// port, and a datagram meets the gate again).
//
// Deleting alone does not end a forwarded connection whose service
// speaks first when the container's port is the published one: its next
// segment, picked up by conntrack mid-stream as a new flow and
// masqueraded to the port the client connected to, reached the client
// (TestIntegrationContainersRevocationServerSpeaksFirst). The label,
// which lives on the entry and so covers both directions, does not let
// that happen.
//
// Deleting the entry alone does not end a local connection: the server's
// next segment re-creates it in the reverse direction and the client's
// packets then match ESTABLISHED. That is why local sockets are destroyed.
//
// The OS boundary is the Kernel interface; System is the real one, and
// tests use a fake. Connections are named by exact tuples (the gate's
// record attributes each connection it let in to the certificates whose
// grant shares accepted it), so that revoking one certificate ends its
// connections and not those of a neighbour behind the same address.
package conns

import (
	"errors"
	"fmt"
	"net/netip"

	"sknock/gate"
	"sknock/packet"
)

// Tuple is one direction of a connection: protocol, source and
// destination (IPv4 unmapped). It is the gate's own tuple, so that the
// connections the gate recorded need no conversion.
type Tuple = gate.Conn

// Conn is one tracked connection: its original direction, as the client
// addressed it, and its reply direction, as the answering socket sees it
// (different from the original reversed when it was DNAT-ed).
type Conn struct {
	Orig, Reply Tuple
	// Zone is the conntrack zone, which deletion needs.
	Zone uint16
}

// ErrNoSocket is Kernel.Destroy's error when no local socket has the
// tuple: the connection is forwarded (or gone).
var ErrNoSocket = errors.New("no such socket")

// ErrNoLabel is Kernel.Label's error when the entry has no room for
// labels: it was created before any rule used conntrack labels.
var ErrNoLabel = errors.New("the conntrack entry has no room for labels")

// Kernel is what ending connections needs from the OS.
type Kernel interface {
	// Conns lists the tracked connections.
	Conns() ([]Conn, error)
	// Destroy resets the local TCP socket from local to remote (the
	// kernel sends the peer a reset); ErrNoSocket when there is none.
	Destroy(local, remote netip.AddrPort) error
	// Label sets the reject label on c's conntrack entry; ErrNoLabel
	// when the entry has no room for labels.
	Label(c Conn) error
	// Forget deletes c's conntrack entry.
	Forget(c Conn) error
}

// Select returns the connections of all whose original direction is one
// of tuples (compared with IPv4 unmapped).
func Select(all []Conn, tuples []Tuple) []Conn {
	want := make(map[Tuple]struct{}, len(tuples))
	for _, t := range tuples {
		want[unmapped(t)] = struct{}{}
	}
	var out []Conn
	for _, c := range all {
		if _, ok := want[unmapped(c.Orig)]; ok {
			out = append(out, c)
		}
	}
	return out
}

// unmapped returns t with IPv4 addresses in 4-byte form.
func unmapped(t Tuple) Tuple {
	t.Src = netip.AddrPortFrom(t.Src.Addr().Unmap(), t.Src.Port())
	t.Dst = netip.AddrPortFrom(t.Dst.Addr().Unmap(), t.Dst.Port())
	return t
}

// End ends every connection of cs and returns how many it ended. A TCP
// connection to a local socket is reset through the socket (the reply
// direction names it: the socket's address is the reply's source); any
// other (forwarded, or UDP, whose local socket usually serves every
// client and must not be destroyed) has its conntrack entry labelled for
// refusal, or deleted when it cannot carry the label. It goes on after an
// error and returns them all.
func End(k Kernel, cs []Conn) (int, error) {
	n := 0
	var errs []error
	for _, c := range cs {
		if c.Orig.Proto == packet.TCP {
			err := k.Destroy(c.Reply.Src, c.Reply.Dst)
			if err == nil {
				n++
				continue
			}
			if !errors.Is(err, ErrNoSocket) {
				errs = append(errs, fmt.Errorf("destroy the socket of %s: %w", c.Orig, err))
				continue
			}
		}
		lerr := k.Label(c)
		if lerr == nil {
			n++
			continue
		}
		if err := k.Forget(c); err != nil {
			errs = append(errs, fmt.Errorf("label (%v) or delete the conntrack entry of %s: %w", lerr, c.Orig, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// EndTuples ends the tracked connections whose original direction is one
// of tuples (those the gate attributed to ended certificates), and
// returns how many it ended.
func EndTuples(k Kernel, tuples []Tuple) (int, error) {
	if len(tuples) == 0 {
		return 0, nil
	}
	all, err := k.Conns()
	if err != nil {
		return 0, fmt.Errorf("list tracked connections: %w", err)
	}
	return End(k, Select(all, tuples))
}
