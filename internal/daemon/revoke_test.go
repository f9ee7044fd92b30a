package daemon

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
	"sknock/internal/config"
	"sknock/packet"
)

// fakeMarker records what it was asked to mark.
type fakeMarker struct {
	ended []gate.EndedGrant
	mark  uint32
	err   error
}

func (f *fakeMarker) MarkFlows(ended []gate.EndedGrant, mark uint32) (int, error) {
	f.ended, f.mark = ended, mark
	return len(ended), f.err
}

func TestEndRevokedLogsAndMarks(t *testing.T) {
	ended := []gate.EndedGrant{{
		Grant:  gate.Grant{Source: netip.MustParseAddr("198.18.0.5"), Proto: packet.TCP, Port: 2000},
		Serial: big.NewInt(4242),
		Expiry: time.Unix(1_800_000_000, 0),
	}}
	cfg := config.Default()
	for _, tt := range []struct {
		name     string
		mark     uint32
		err      error
		wantMark bool
		wantLog  string
	}{
		{"marked", 0x2, nil, true, `"msg":"connections of revoked grants ended","connections":1`},
		{"marking fails", 0x2, errors.New("conntrack: permission denied"), true, `could not mark every connection`},
		{"no revoke mark", 0, nil, false, `"msg":"grant ended","source":"198.18.0.5","proto":"tcp","port":2000,"serial":"4242","reason":"revoked"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			c := cfg
			c.Rules.RevokeMark = tt.mark
			m := &fakeMarker{err: tt.err}
			d := &daemon{run: state{cfg: &c}, log: newLoggerAt(logLevel("info"), &out), marker: m}
			d.endRevoked(ended)
			if (m.ended != nil) != tt.wantMark || (tt.wantMark && m.mark != tt.mark) {
				t.Errorf("marker asked for %v with mark %#x; want asked %v with %#x", m.ended, m.mark, tt.wantMark, tt.mark)
			}
			if !strings.Contains(out.String(), tt.wantLog) || !strings.Contains(out.String(), `"msg":"grant ended"`) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, out.String())
			}
		})
	}
}

func TestEndedFlow(t *testing.T) {
	ended := []gate.EndedGrant{{Grant: gate.Grant{Source: netip.MustParseAddr("198.18.0.5"), Proto: packet.TCP, Port: 2000}}}
	flow := func(src string, proto uint8, port uint16) conntrack.Flow {
		var f conntrack.Flow
		f.TupleOrig.IP.SourceAddress = netip.MustParseAddr(src)
		f.TupleOrig.IP.DestinationAddress = netip.MustParseAddr("198.18.0.1")
		f.TupleOrig.Proto.Protocol = proto
		f.TupleOrig.Proto.SourcePort = 40000
		f.TupleOrig.Proto.DestinationPort = port
		return f
	}
	for _, tt := range []struct {
		name string
		f    conntrack.Flow
		want bool
	}{
		{"the grant's connection", flow("198.18.0.5", 6, 2000), true},
		{"v4-mapped form", flow("::ffff:198.18.0.5", 6, 2000), true},
		{"other port", flow("198.18.0.5", 6, 3000), false},
		{"other protocol", flow("198.18.0.5", 17, 2000), false},
		{"other source", flow("198.18.0.6", 6, 2000), false},
	} {
		if got := endedFlow(tt.f, ended); got != tt.want {
			t.Errorf("%s: endedFlow = %v, want %v", tt.name, got, tt.want)
		}
	}
}
