package main

import (
	"bytes"
	"errors"
	"math/big"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"sknock/gate"
	"sknock/internal/connwatch"
	"sknock/packet"
)

// fakeMarker records what it was asked to mark.
type fakeMarker struct {
	conns []gate.Conn
	mark  uint32
	err   error
}

func (f *fakeMarker) MarkFlows(conns []gate.Conn, mark uint32) (int, error) {
	f.conns, f.mark = conns, mark
	return len(conns), f.err
}

func TestEndRevokedLogsAndMarks(t *testing.T) {
	ended := gate.Ended{
		Grants: []gate.EndedGrant{{
			Grant:     gate.Grant{Source: netip.MustParseAddr("198.18.0.5"), Proto: packet.TCP, Port: 2000},
			Serial:    big.NewInt(4242),
			Expiry:    time.Unix(1_800_000_000, 0),
			StillOpen: true,
		}},
		Conns: []gate.Conn{{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.5:40000"), Dst: netip.MustParseAddrPort("198.18.0.1:2000")}},
	}
	cfg := defaultConfig()
	for _, tt := range []struct {
		name     string
		mark     uint32
		err      error
		wantMark bool
		wantLog  string
	}{
		{"marked", 0x2, nil, true, `"msg":"connections of revoked grants ended","connections":1,"recorded":1`},
		{"marking fails", 0x2, errors.New("conntrack: permission denied"), true, `could not end every connection`},
		{"no revoke mark", 0, nil, false, `"msg":"grant ended","source":"198.18.0.5","proto":"tcp","port":2000,"serial":"4242","reason":"revoked","subject":"","address_still_open":true`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := cfg
			c.Rules.RevokeMark = tt.mark
			m := &fakeMarker{err: tt.err}
			d := &daemon{cfg: &c, log: newLoggerAt(logLevel("info"), &out), marker: m}
			d.endRevoked(ended)
			if (m.conns != nil) != tt.wantMark || (tt.wantMark && m.mark != tt.mark) {
				t.Errorf("marker asked for %v with mark %#x; want asked %v with %#x", m.conns, m.mark, tt.wantMark, tt.mark)
			}
			if !strings.Contains(out.String(), tt.wantLog) || !strings.Contains(out.String(), `"msg":"grant ended"`) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, out.String())
			}
		})
	}
}

func TestConnOf(t *testing.T) {
	var f conntrack.Flow
	f.TupleOrig.IP.SourceAddress = netip.MustParseAddr("::ffff:198.18.0.5")
	f.TupleOrig.IP.DestinationAddress = netip.MustParseAddr("198.18.0.1")
	f.TupleOrig.Proto.Protocol = 6
	f.TupleOrig.Proto.SourcePort = 40000
	f.TupleOrig.Proto.DestinationPort = 2000
	want := gate.Conn{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.5:40000"), Dst: netip.MustParseAddrPort("198.18.0.1:2000")}
	if got := connwatch.ConnOf(f); got != want {
		t.Errorf("ConnOf = %v, want %v", got, want)
	}
}
