package packet

import (
	"fmt"
	"strconv"
	"strings"
)

// Proto is a transport protocol by its IP protocol number. The zero value
// means unknown. Wire formats that number protocols otherwise (a knock's
// 0 for TCP and 1 for UDP) convert at their edge.
type Proto uint8

// The protocols sknock gates.
const (
	TCP Proto = 6
	UDP Proto = 17
)

// Valid reports whether p is TCP or UDP.
func (p Proto) Valid() bool { return p == TCP || p == UDP }

// String returns "tcp" or "udp", or "proto(N)" for any other number.
func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
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
