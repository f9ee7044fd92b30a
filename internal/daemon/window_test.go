package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"sknock/conns"
	"sknock/gate"
	"sknock/packet"
	"sknock/rules"
)

// TestGatedFlows: after a restore of the rules, the connections looked
// for are those the gate would have judged: to a protected port, local or
// DNAT-ed, not over loopback; a forwarded one is not.
func TestGatedFlows(t *testing.T) {
	ap := netip.MustParseAddrPort
	tcp := func(src, dst, replySrc string) conns.Conn {
		return conns.Conn{
			Orig:  conns.Tuple{Proto: packet.TCP, Src: ap(src), Dst: ap(dst)},
			Reply: conns.Tuple{Proto: packet.TCP, Src: ap(replySrc), Dst: ap(src)},
		}
	}
	local := map[netip.Addr]bool{netip.MustParseAddr("198.19.0.1"): true, netip.MustParseAddr("fd00:5e::1"): true}
	protects := func(p packet.Proto, port uint16) bool { return p == packet.TCP && port == 2000 }
	flows := []conns.Conn{
		tcp("198.18.0.2:40000", "198.19.0.1:2000", "198.19.0.1:2000"),                   // local: judged
		tcp("[fd00:5e::2]:40000", "[fd00:5e::1]:2000", "[fd00:5e::1]:2000"),             // local IPv6: judged
		tcp("[::ffff:198.18.0.3]:40000", "[::ffff:198.19.0.1]:2000", "198.19.0.1:2000"), // mapped: judged, unmapped
		tcp("198.18.0.2:40001", "198.19.0.1:2001", "198.19.0.1:2001"),                   // unprotected port
		tcp("198.18.0.2:40002", "198.18.9.9:2000", "198.18.9.9:2000"),                   // forwarded through
		tcp("198.18.0.2:40003", "198.18.9.9:2000", "198.18.7.7:2000"),                   // DNAT-ed (a container): judged
		tcp("198.18.0.2:40004", "198.19.0.1:2000", "198.19.0.1:8080"),                   // DNAT-ed to another port: judged
		tcp("127.0.0.1:40005", "127.0.0.1:2000", "127.0.0.1:2000"),                      // loopback
	}
	got := gatedFlows(flows, local, protects)
	want := []gate.Conn{
		{Proto: packet.TCP, Src: ap("198.18.0.2:40000"), Dst: ap("198.19.0.1:2000")},
		{Proto: packet.TCP, Src: ap("[fd00:5e::2]:40000"), Dst: ap("[fd00:5e::1]:2000")},
		{Proto: packet.TCP, Src: ap("198.18.0.3:40000"), Dst: ap("198.19.0.1:2000")},
		{Proto: packet.TCP, Src: ap("198.18.0.2:40003"), Dst: ap("198.18.9.9:2000")},
		{Proto: packet.TCP, Src: ap("198.18.0.2:40004"), Dst: ap("198.19.0.1:2000")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("gatedFlows =\n%v\nwant\n%v", got, want)
	}
}

// TestRestoredAny: only a finding the watcher put back starts the search.
func TestRestoredAny(t *testing.T) {
	failed := rules.Finding{Family: "iptables", Problem: "x", Err: errors.New("iptables: exit 4")}
	restored := rules.Finding{Family: "iptables", Problem: "x"}
	for _, tc := range []struct {
		findings []rules.Finding
		want     bool
	}{
		{nil, false},
		{[]rules.Finding{failed}, false},
		{[]rules.Finding{failed, restored}, true},
	} {
		if got := restoredAny(tc.findings); got != tc.want {
			t.Errorf("restoredAny(%v) = %v, want %v", tc.findings, got, tc.want)
		}
	}
}
