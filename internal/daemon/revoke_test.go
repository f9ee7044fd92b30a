package daemon

import (
	"bytes"
	"errors"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/packet"
)

// fakeEnder records what it was asked to end.
type fakeEnder struct {
	ended []gate.Conn
	err   error
}

func (f *fakeEnder) EndConns(ended []gate.Conn) (int, error) {
	f.ended = ended
	return len(ended), f.err
}

// TestEndRevokedLogsAndEnds: the ended shares are logged, and exactly
// the connections attributed to them are ended.
func TestEndRevokedLogsAndEnds(t *testing.T) {
	ended := gate.Ended{
		Grants: []gate.EndedGrant{{
			Grant:     gate.Grant{Source: netip.MustParseAddr("198.18.0.5"), Proto: packet.TCP, Port: 2000},
			Serial:    big.NewInt(4242),
			Expiry:    time.Unix(1_800_000_000, 0),
			StillOpen: true,
		}},
		Conns: []gate.Conn{{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.5:40000"), Dst: netip.MustParseAddrPort("198.18.0.1:2000")}},
	}
	cfg := config.Default()
	for _, tt := range []struct {
		name    string
		err     error
		wantLog string
	}{
		{"ended", nil, `"msg":"connections of revoked grants ended","connections":1,"recorded":1`},
		{"ending fails", errors.New("conntrack: permission denied"), `could not end every connection`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			m := &fakeEnder{err: tt.err}
			d := &daemon{run: state{cfg: &cfg}, log: newLoggerAt(logLevel("info"), &out), marker: m}
			d.endRevoked(ended)
			if !slices.Equal(m.ended, ended.Conns) {
				t.Errorf("ender asked for %v, want %v", m.ended, ended.Conns)
			}
			if !strings.Contains(out.String(), tt.wantLog) || !strings.Contains(out.String(), `"msg":"grant ended","source":"198.18.0.5","proto":"tcp","port":2000,"serial":"4242","reason":"revoked","subject":"","address_still_open":true`) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, out.String())
			}
		})
	}
}
