package rules

import (
	"errors"
	"fmt"
	"sknock/packet"
	"strconv"
	"strings"
)

// PortSpec names a set of ports of one transport protocol: one port
// ("tcp/22"), an inclusive range ("tcp/8000-8100") or every port ("udp/*").
type PortSpec struct {
	// Proto is packet.TCP or packet.UDP.
	Proto packet.Proto
	// First and Last bound the inclusive range; both are equal for one
	// port. They are zero, and ignored, when All is set.
	First, Last uint16
	// All means every port of Proto.
	All bool
}

// ErrBadPortSpec is wrapped by every error ParsePortSpec returns.
var ErrBadPortSpec = errors.New("bad port spec")

// ParsePortSpec parses "tcp/22", "udp/8000", "tcp/8000-8100", "tcp/*" or
// "udp/*". It is strict: lower-case protocol, decimal ports 1–65535 without
// sign, spaces or leading zeros, and a range's first port not above its
// last. Errors quote the spec and wrap ErrBadPortSpec.
func ParsePortSpec(s string) (PortSpec, error) {
	bad := func(why string) (PortSpec, error) {
		return PortSpec{}, fmt.Errorf("%w %q: %s", ErrBadPortSpec, s, why)
	}
	protoText, ports, ok := strings.Cut(s, "/")
	if !ok {
		return bad(`want PROTO/PORT, PROTO/FIRST-LAST or PROTO/*`)
	}
	var proto packet.Proto
	switch protoText {
	case "tcp":
		proto = packet.TCP
	case "udp":
		proto = packet.UDP
	default:
		return bad(`protocol must be "tcp" or "udp"`)
	}
	if ports == "*" {
		return PortSpec{Proto: proto, All: true}, nil
	}
	firstText, lastText, isRange := strings.Cut(ports, "-")
	first, err := parsePort(firstText)
	if err != nil {
		return bad(err.Error())
	}
	last := first
	if isRange {
		if last, err = parsePort(lastText); err != nil {
			return bad(err.Error())
		}
		if first > last {
			return bad(fmt.Sprintf("range %d-%d runs backwards", first, last))
		}
	}
	return PortSpec{Proto: proto, First: first, Last: last}, nil
}

// parsePort parses a decimal port 1–65535 with no sign, space or leading
// zero, so that every accepted spec has exactly one spelling.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", s)
		}
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("port %q: must be 1-65535 without leading zeros", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: must be 1-65535", s)
	}
	return uint16(n), nil
}

// String returns the spec in the form ParsePortSpec reads: "tcp/22",
// "tcp/8000-8100" or "tcp/*".
func (p PortSpec) String() string {
	switch {
	case p.All:
		return p.Proto.String() + "/*"
	case p.First == p.Last:
		return p.Proto.String() + "/" + strconv.Itoa(int(p.First))
	default:
		return p.Proto.String() + "/" + strconv.Itoa(int(p.First)) + "-" + strconv.Itoa(int(p.Last))
	}
}

// Contains reports whether port of proto is in p.
func (p PortSpec) Contains(proto packet.Proto, port uint16) bool {
	return proto == p.Proto && (p.All || (p.First <= port && port <= p.Last))
}

// Overlaps reports whether p and other share at least one port of the
// same protocol.
func (p PortSpec) Overlaps(other PortSpec) bool {
	if p.Proto != other.Proto {
		return false
	}
	if p.All || other.All {
		return true
	}
	return p.First <= other.Last && other.First <= p.Last
}

// dport returns the argument of iptables' --dport for p: "22" or
// "8000:8100". It is empty for All.
func (p PortSpec) dport() string {
	if p.All {
		return ""
	}
	return portRange(p.First, p.Last)
}

// portRange renders an inclusive range the way iptables' --dport wants it.
func portRange(first, last uint16) string {
	if first == last {
		return strconv.Itoa(int(first))
	}
	return strconv.Itoa(int(first)) + ":" + strconv.Itoa(int(last))
}
