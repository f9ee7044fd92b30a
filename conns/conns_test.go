package conns_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"sknock/conns"
	"sknock/gate"
	"sknock/packet"
)

// fakeKernel holds tracked connections and local TCP sockets.
type fakeKernel struct {
	conns      []conns.Conn
	sockets    map[[2]netip.AddrPort]bool // local, remote
	destroyed  [][2]netip.AddrPort
	labelled   []conns.Conn
	forgotten  []conns.Conn
	failLabel  error
	failForget error
}

func (k *fakeKernel) Conns() ([]conns.Conn, error) { return k.conns, nil }

func (k *fakeKernel) Destroy(local, remote netip.AddrPort) error {
	if !k.sockets[[2]netip.AddrPort{local, remote}] {
		return conns.ErrNoSocket
	}
	k.destroyed = append(k.destroyed, [2]netip.AddrPort{local, remote})
	return nil
}

func (k *fakeKernel) Label(c conns.Conn) error {
	if k.failLabel != nil {
		return k.failLabel
	}
	k.labelled = append(k.labelled, c)
	return nil
}

func (k *fakeKernel) Forget(c conns.Conn) error {
	if k.failForget != nil {
		return k.failForget
	}
	k.forgotten = append(k.forgotten, c)
	return nil
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// conn is a connection from src to dst, answered by the socket at
// replySrc (dst itself unless DNAT-ed).
func conn(proto packet.Proto, src, dst, replySrc string) conns.Conn {
	return conns.Conn{
		Orig:  conns.Tuple{Proto: proto, Src: ap(src), Dst: ap(dst)},
		Reply: conns.Tuple{Proto: proto, Src: ap(replySrc), Dst: ap(src)},
	}
}

// TestEndTuples: exactly the named connections end, whatever else shares
// their source, protocol and port (a neighbour behind the same NAT).
func TestEndTuples(t *testing.T) {
	local := conn(packet.TCP, "198.18.0.5:40000", "198.18.0.1:2000", "198.18.0.1:2000")
	forwarded := conn(packet.TCP, "198.18.0.5:40001", "198.18.0.1:2000", "198.19.0.2:80")
	udp := conn(packet.UDP, "198.18.0.5:40002", "198.18.0.1:2000", "198.18.0.1:2000")
	other := conn(packet.TCP, "198.18.0.6:40000", "198.18.0.1:2000", "198.18.0.1:2000")
	otherPort := conn(packet.TCP, "198.18.0.5:40003", "198.18.0.1:22", "198.18.0.1:22")
	neighbour := conn(packet.TCP, "198.18.0.5:40004", "198.18.0.1:2000", "198.18.0.1:2000")
	k := &fakeKernel{
		conns:   []conns.Conn{local, forwarded, udp, other, otherPort, neighbour},
		sockets: map[[2]netip.AddrPort]bool{{ap("198.18.0.1:2000"), ap("198.18.0.5:40000")}: true, {ap("198.18.0.1:2000"), ap("198.18.0.6:40000")}: true},
	}
	n, err := conns.EndTuples(k, []conns.Tuple{local.Orig, forwarded.Orig, udp.Orig})
	if err != nil || n != 3 {
		t.Fatalf("EndTuples = %d, %v; want 3, nil", n, err)
	}
	if want := [][2]netip.AddrPort{{ap("198.18.0.1:2000"), ap("198.18.0.5:40000")}}; !slices.Equal(k.destroyed, want) {
		t.Errorf("destroyed %v, want %v (the local TCP socket only)", k.destroyed, want)
	}
	if want := []conns.Conn{forwarded, udp}; !slices.Equal(k.labelled, want) || len(k.forgotten) != 0 {
		t.Errorf("labelled %v and forgot %v, want %v labelled (the forwarded and the UDP connection)", k.labelled, k.forgotten, want)
	}

	// An entry with no room for the label is deleted instead.
	k = &fakeKernel{conns: []conns.Conn{forwarded}, failLabel: conns.ErrNoLabel}
	if n, err := conns.EndTuples(k, []conns.Tuple{forwarded.Orig}); err != nil || n != 1 || !slices.Equal(k.forgotten, []conns.Conn{forwarded}) {
		t.Errorf("an entry without labels: EndTuples = %d, %v, forgot %v; want it deleted", n, err, k.forgotten)
	}
}

func TestEndReportsEveryError(t *testing.T) {
	k := &fakeKernel{failLabel: conns.ErrNoLabel, failForget: errors.New("permission denied")}
	cs := []conns.Conn{
		conn(packet.UDP, "198.18.0.5:1", "198.18.0.1:2000", "198.18.0.1:2000"),
		conn(packet.UDP, "198.18.0.5:2", "198.18.0.1:2000", "198.18.0.1:2000"),
	}
	n, err := conns.End(k, cs)
	if n != 0 || err == nil || !errors.Is(err, k.failForget) {
		t.Fatalf("End = %d, %v; want 0 and the forget error", n, err)
	}
}

func TestSelectMapped(t *testing.T) {
	c := conn(packet.TCP, "[::ffff:198.18.0.5]:40000", "[::ffff:198.18.0.1]:2000", "[::ffff:198.18.0.1]:2000")
	got := conns.Select([]conns.Conn{c}, []gate.Conn{{Proto: packet.TCP, Src: ap("198.18.0.5:40000"), Dst: ap("198.18.0.1:2000")}})
	if len(got) != 1 {
		t.Errorf("Select of a v4-mapped source = %v, want it", got)
	}
}
