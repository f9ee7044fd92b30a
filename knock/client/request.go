package client

import (
	"errors"
	"fmt"
	"net/netip"
	"sknock/packet"
	"strconv"
	"strings"
	"time"
)

// ErrRequest is returned (wrapped) by ParseRequest for text that is not
// PROTO/PORT.
var ErrRequest = errors.New("malformed PROTO/PORT")

// ErrNotOpen is returned (wrapped) in a Result when a TCP port did not
// accept a connection after every knock.
var ErrNotOpen = errors.New("port did not open")

// Request is one port to open.
type Request struct {
	// Proto and Port are the protocol and port to open.
	Proto packet.Proto
	Port  uint16
}

// String returns the request as "tcp/22".
func (r Request) String() string { return r.Proto.String() + "/" + strconv.Itoa(int(r.Port)) }

// ParseRequest reads "tcp/22" or "udp/8000" (protocol in any case, port
// 1..65535 in decimal digits).
func ParseRequest(s string) (Request, error) {
	protoText, portText, ok := strings.Cut(s, "/")
	if !ok {
		return Request{}, fmt.Errorf("%w: %q (want e.g. tcp/22 or udp/8000)", ErrRequest, s)
	}
	proto, err := packet.ParseProto(protoText)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %q: %w", ErrRequest, s, err)
	}
	if portText == "" || strings.TrimLeft(portText, "0123456789") != "" {
		return Request{}, fmt.Errorf("%w: %q: port is not a decimal number", ErrRequest, s)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return Request{}, fmt.Errorf("%w: %q: port not in 1..65535", ErrRequest, s)
	}
	return Request{Proto: proto, Port: uint16(port)}, nil
}

// Status is what became of one Request.
type Status int

// The outcomes of a Request.
const (
	// StatusFailed: the knock could not be sent, or a TCP port never
	// accepted a connection. Result.Err says why.
	StatusFailed Status = iota
	// StatusSent: the knock was sent and not verified, because the port
	// is UDP (nothing answers) or verification was turned off.
	StatusSent
	// StatusOpen: the TCP port accepted a connection after the knock.
	StatusOpen
	// StatusAlreadyOpen: the TCP port was open to this client's address
	// before the knock (a connection started just before the knock opened
	// before the knock's own probe could): another grant to the same
	// address (a neighbour behind one NAT address) or no gate at all. The
	// knock's own verdict is unknown here; the gatekeeper logs it.
	StatusAlreadyOpen
)

// String returns "failed", "knocked", "open" or "already open".
func (s Status) String() string {
	switch s {
	case StatusSent:
		return "knocked"
	case StatusOpen:
		return "open"
	case StatusAlreadyOpen:
		return "already open"
	}
	return "failed"
}

// Result is the outcome of one Request.
type Result struct {
	// Request is what was asked for.
	Request Request
	// Status is how it ended: open (verified), sent (UDP or --no-verify)
	// or failed.
	Status Status
	// Elapsed runs from sending the first knock to the connection that
	// verified the port (StatusOpen) or to giving up (StatusFailed).
	Elapsed time.Duration
	// Knocks counts the datagrams sent for this request, the first one
	// and every re-knock.
	Knocks int
	// Probes counts the connection attempts made to verify the port,
	// the one started just before the first knock included.
	Probes int
	// Addr is the host address the port was verified open on (a name may
	// have one of each family).
	Addr netip.Addr

	// Embedded is the client address the first knock embedded.
	Embedded netip.Addr

	firstErr error // why the first knock could not be sent, for verify
	// pre is the connection started just before the first knock.
	pre *preConn
	// Err is nil unless Status is StatusFailed.
	Err error
}
