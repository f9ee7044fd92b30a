package gate

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
)

func TestGrantTableListAndEndWhere(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	a, b := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("fd00:5e::2")
	tbl := NewGrantTable(0)
	tbl.SetCertShare(10)
	add := func(src netip.Addr, port uint16, cert CertID, left time.Duration) {
		t.Helper()
		if err := tbl.Add(Grant{Source: src, Proto: packet.TCP, Port: port}, cert, now.Add(left)); err != nil {
			t.Fatal(err)
		}
	}
	add(a, 2000, testCert(7), 10*time.Second)
	add(a, 3000, testCert(8), 20*time.Second)
	add(b, 2000, testCert(7), 30*time.Second)
	add(b, 4000, testCert(9), -time.Second) // expired, not yet swept

	ports := func(gs []GrantInfo) []string {
		var out []string
		for _, g := range gs {
			out = append(out, g.Source.String()+"/"+g.Proto.String()+"/"+time.Duration(g.Expiry.Sub(now)).String())
		}
		slices.Sort(out)
		return out
	}
	list, live := tbl.List(now, 0)
	if live != 3 {
		t.Errorf("live = %d, want 3 (the expired grant is not listed)", live)
	}
	want := []string{"198.18.0.2/tcp/10s", "198.18.0.2/tcp/20s", "fd00:5e::2/tcp/30s"}
	if diff := cmp.Diff(want, ports(list)); diff != "" {
		t.Errorf("List (-want +got):\n%s", diff)
	}
	if short, live := tbl.List(now, 2); len(short) != 2 || live != 3 {
		t.Errorf("List(max 2) = %d grants, live %d; want 2 and 3", len(short), live)
	}

	ended := tbl.EndWhere(now, func(g GrantInfo) bool { return g.Cert == testCert(7) })
	var endedInfo []GrantInfo
	for _, g := range ended {
		endedInfo = append(endedInfo, GrantInfo{Grant: g.Grant, Cert: g.Cert, Expiry: g.Expiry})
	}
	if diff := cmp.Diff([]string{"198.18.0.2/tcp/10s", "fd00:5e::2/tcp/30s"}, ports(endedInfo)); diff != "" {
		t.Errorf("EndWhere(cert 7) (-want +got):\n%s", diff)
	}
	if tbl.Allowed(a, packet.TCP, 2000, now) || !tbl.Allowed(a, packet.TCP, 3000, now) {
		t.Error("after EndWhere(cert 7): a's tcp/2000 should be gone and its tcp/3000 kept")
	}
	// The certificate's share is given back: it may hold grants again.
	add(a, 2000, testCert(7), 10*time.Second)

	ended = tbl.EndWhere(now, func(GrantInfo) bool { return true })
	if len(ended) != 2 || tbl.Len() != 0 {
		t.Errorf("EndWhere(all) ended %d live grants and left %d; want 2 and 0 (the expired one goes unreported)", len(ended), tbl.Len())
	}
}
