package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"sknock/internal/netns"
)

// The addresses of the three namespaces NewNet makes. All three share one
// IPv4 /24 and the IPv6 /64 on a bridge in the server namespace, so a
// client and mallory differ only in their source address.
var (
	ServerV4  = netip.MustParseAddr("198.18.0.1")
	ClientV4  = netip.MustParseAddr("198.18.0.2")
	MalloryV4 = netip.MustParseAddr("198.18.0.3")
	ServerV6  = netip.MustParseAddr("fd00:5e::1")
	ClientV6  = netip.MustParseAddr("fd00:5e::2")
	MalloryV6 = netip.MustParseAddr("fd00:5e::3")
)

// Net is a server namespace with a bridge (br0) and two client
// namespaces, Client and Mallory, each with one veth (veth0) on it.
type Net struct {
	Server  *netns.NS
	Client  *netns.NS
	Mallory *netns.NS
}

// NewNet builds the namespaces and links and fails t on any error. They
// are deleted (and whatever runs in them killed) when t ends.
func NewNet(t testing.TB) *Net {
	t.Helper()
	n := &Net{
		Server:  netns.New(t, "srv"),
		Client:  netns.New(t, "cli"),
		Mallory: netns.New(t, "mal"),
	}
	noDAD(n.Server)
	// Answer every refused packet: with the default ICMP rate limit a
	// burst of rejected UDP probes would see silence instead of a port
	// unreachable.
	n.Server.MustRun("sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
	n.Server.MustRun("ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
	n.Server.MustRun("ip", "addr", "add", ServerV4.String()+"/24", "dev", "br0")
	n.Server.MustRun("ip", "-6", "addr", "add", ServerV6.String()+"/64", "dev", "br0", "nodad")
	n.Server.MustRun("ip", "link", "set", "br0", "up")
	attach(n.Server, "vcli", n.Client, ClientV4, ClientV6)
	attach(n.Server, "vmal", n.Mallory, MalloryV4, MalloryV6)
	waitForwarding(t, n.Server, 2)
	return n
}

// waitForwarding waits until ports bridge ports forward: a port is
// disabled until its peer's carrier is up, and a SYN sent before then is
// lost and only retried a second later.
func waitForwarding(t testing.TB, server *netns.NS, ports int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := server.Run("bridge", "link", "show")
		if err == nil && strings.Count(out, "state forwarding") >= ports {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge ports not forwarding after 5s: %v\n%s", err, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// attach links peer to the server's bridge: port is the server-side end,
// veth0 the peer's, which gets v4/24 and v6/64.
func attach(server *netns.NS, port string, peer *netns.NS, v4, v6 netip.Addr) {
	server.MustRun("ip", "link", "add", port, "type", "veth", "peer", "name", "veth0", "netns", peer.Name)
	server.MustRun("ip", "link", "set", port, "master", "br0", "up")
	noDAD(peer)
	peer.MustRun("ip", "addr", "add", v4.String()+"/24", "dev", "veth0")
	peer.MustRun("ip", "-6", "addr", "add", v6.String()+"/64", "dev", "veth0", "nodad")
	peer.MustRun("ip", "link", "set", "veth0", "up")
}

// noDAD turns IPv6 duplicate address detection off for links made later,
// so addresses work at once.
func noDAD(ns *netns.NS) {
	ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
}

// AddrPort formats addr and port as "198.18.0.1:2000" or "[fd00:5e::1]:2000".
func AddrPort(addr netip.Addr, port uint16) string {
	return netip.AddrPortFrom(addr, port).String()
}

// ServerAddr returns the server's address of the family of src.
func ServerAddr(src netip.Addr) netip.Addr {
	if src.Is4() {
		return ServerV4
	}
	return ServerV6
}
