package gate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"sknock/knock"
	"sknock/pki"
)

// KnockLane says, on the knock reader's receive goroutine, how a knock
// datagram is served (queue.KnockConfig.Classify): atOnce for one that
// is refused without any public-key operation — no knock sknock reads, a
// wire version the configuration refuses, a v2 datagram whose envelope
// or mac1 is wrong — so that a flood of them never takes a worker; fast
// for a v2 knock whose mac1 is right, which waits ahead of v1 knocks
// (PROTOCOL-v2.md: a v1 knock never delays a v2 knock whose mac1 is
// right); neither for a v1 knock. It costs one HMAC at most, and does not
// allocate.
func (e *Engine) KnockLane(datagram []byte) (atOnce, fast bool) {
	v := knock.Version(datagram)
	switch {
	case v == 0 || !e.Accepts(v):
		return true, false
	case v == 1:
		return false, false
	}
	if e.trust.Load().CheckMAC1(datagram) != ReasonNone {
		return true, false
	}
	return false, true
}

// KnockAtOnce decides, and counts, a datagram that KnockLane said to
// decide at once, without repeating KnockLane's mac1 check: a datagram
// with a good v2 envelope is refused as bad_mac1 (fail closed, should it
// be called for another), a version the configuration refuses as
// protocol_refused, anything else as Decide refuses it. It is Knock for
// the knock reader's receive goroutine (queue.KnockConfig.AtOnce), which
// spares the second HMAC; it does not allocate.
func (e *Engine) KnockAtOnce(src netip.Addr, datagram []byte) Decision {
	var d Decision
	d.Version = knock.Version(datagram)
	switch {
	case !e.Accepts(d.Version):
		d = deny(d, ReasonProtocolRefused, errProtocolRefused[min(d.Version, 2)])
	case d.Version == 2 && knock.ValidEnvelopeV2(datagram) && e.trust.Load() != nil:
		d = deny(d, ReasonBadMAC1, errMAC1)
	default:
		return e.Knock(src, datagram)
	}
	e.stats.knocks[d.Reason].Add(1)
	if e.pending.done(src) {
		e.announce()
	}
	return d
}

// ParseProtocols reads the wire versions of knock.protocols ("1", "2"):
// at least one, each 1 or 2, none twice.
func ParseProtocols(items []string) ([]int, error) {
	if len(items) == 0 {
		return nil, errors.New("list no version: write [1, 2], [2] or [1]")
	}
	var out []int
	for _, s := range items {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v < 1 || v > 2 {
			return nil, fmt.Errorf("%q is not a knock wire version (1 or 2)", s)
		}
		if slices.Contains(out, v) {
			return nil, fmt.Errorf("version %d listed twice", v)
		}
		out = append(out, v)
	}
	return out, nil
}

// RequestsString writes a v2 knock's requests as the command line does:
// "tcp/22,tcp/443,udp/8000".
func RequestsString(reqs []knock.Request) string {
	asked := make(pki.Authorization, len(reqs))
	for i, r := range reqs {
		asked[i] = pki.Permission{Proto: r.Proto, Port: r.Port}
	}
	return asked.CLIString()
}
