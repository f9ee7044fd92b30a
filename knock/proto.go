package knock

import (
	"fmt"
	"strings"
)

// Proto is the transport protocol a knock asks to open. Its values are the
// wire encoding of PROTOCOL.md: 1 for TCP, 0 for UDP.
type Proto uint8

// The protocols a knock can request.
const (
	UDP Proto = 0
	TCP Proto = 1
)

// String returns "tcp" or "udp", or "proto(N)" for a value the wire format
// does not define.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// Valid reports whether p is TCP or UDP.
func (p Proto) Valid() bool { return p == TCP || p == UDP }

// IPProto returns the IP protocol number of p (6 for TCP, 17 for UDP).
func (p Proto) IPProto() uint8 {
	if p == TCP {
		return 6
	}
	return 17
}

// ParseProto reads "tcp" or "udp" (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp or udp)", s)
}
