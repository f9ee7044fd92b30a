// Package stun learns the public address of a client behind NAT by asking
// STUN servers (RFC 8489 Binding requests over UDP), and answers such
// requests, for tests and for anyone who wants to run a server of their
// own. The sockets, timeouts and the comparison of two servers' answers are
// here, the message codec in message.go (checked against
// github.com/pion/stun/v3 in the tests).
package stun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DefaultServers are asked when no server is named: two operators, so
// that two answers can be compared.
var DefaultServers = []string{"stun.l.google.com:19302", "stun.cloudflare.com:3478"}

// DefaultTimeout bounds one discovery when the context has no earlier
// deadline.
const DefaultTimeout = 700 * time.Millisecond

// retransmit is the wait before a request is sent again (UDP may lose
// it); it doubles after each send.
const retransmit = 100 * time.Millisecond

// secondAnswerGrace is how long Discover waits, after a first answer, for
// a second server's, so that a dead second server costs little.
const secondAnswerGrace = 50 * time.Millisecond

// software names the client in requests and the server in responses.
const software = "sknock"

// ErrNoAnswer is returned (wrapped) when no server answered in time.
var ErrNoAnswer = errors.New("no STUN server answered")

// ErrDisagree is returned (wrapped) when two servers report different
// public addresses: the NAT maps this host to several addresses, and no
// single one can be embedded in a knock.
var ErrDisagree = errors.New("STUN servers disagree on the public address")

// Answer is what Discover learnt.
type Answer struct {
	// Addr is the public address the servers saw.
	Addr netip.Addr
	// Servers are the servers whose answers gave Addr (one or two).
	Servers []string
	// Software is the first answering server's SOFTWARE attribute, if any.
	Software string
}

// Discover asks every server in servers concurrently, from a socket of
// network ("udp4" or "udp6"; "udp" lets each server's address decide), for
// the address it sees. It returns the first answer's address once a
// second server agreed, no other server is left to answer, or a short
// grace after the first answer passed. Without a deadline on ctx it gives
// up after DefaultTimeout.
func Discover(ctx context.Context, network string, servers []string) (Answer, error) {
	if len(servers) == 0 {
		return Answer{}, errors.New("STUN: no server to ask")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type reply struct {
		server string
		ans    Reply
		err    error
	}
	replies := make(chan reply, len(servers))
	for _, s := range servers {
		go func() {
			a, err := Query(ctx, network, s)
			replies <- reply{s, a, err}
		}()
	}
	var first *reply
	var errs []error
	var grace <-chan time.Time
	for pending := len(servers); pending > 0; {
		select {
		case r := <-replies:
			pending--
			if r.err != nil {
				errs = append(errs, r.err)
				continue
			}
			if first == nil {
				first = &r
				grace = time.After(secondAnswerGrace)
				continue
			}
			if r.ans.Addr.Addr() != first.ans.Addr.Addr() {
				return Answer{}, fmt.Errorf("%w: %s sees %s, %s sees %s", ErrDisagree,
					first.server, first.ans.Addr.Addr(), r.server, r.ans.Addr.Addr())
			}
			return Answer{Addr: first.ans.Addr.Addr(), Servers: []string{first.server, r.server}, Software: first.ans.Software}, nil
		case <-grace:
			pending = 0
		case <-ctx.Done():
			pending = 0
		}
	}
	if first != nil {
		return Answer{Addr: first.ans.Addr.Addr(), Servers: []string{first.server}, Software: first.ans.Software}, nil
	}
	if len(errs) == 0 {
		errs = append(errs, ctx.Err())
	}
	return Answer{}, fmt.Errorf("%w (asked %s): %w", ErrNoAnswer, strings.Join(servers, ", "), errors.Join(errs...))
}

// Reply is one server's answer.
type Reply struct {
	// Addr is the address and port the server saw the request come from.
	Addr netip.AddrPort
	// Software is the server's SOFTWARE attribute, if it sent one.
	Software string
}

// Query asks one server (HOST:PORT) for the address it sees this host's
// request come from, retransmitting on the RFC's schedule until ctx ends.
func Query(ctx context.Context, network, server string) (Reply, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server)
	if err != nil {
		return Reply{}, fmt.Errorf("STUN server %s: %w", server, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	id := newTransactionID()
	req := encode(typeBindingRequest, id, attr{attrSoftware, []byte(software)})
	sent := make(chan error, 1)
	go func() {
		gap := retransmit
		for {
			if _, err := conn.Write(req); err != nil {
				sent <- err
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(gap):
				gap *= 2
			}
		}
	}()
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			select {
			case werr := <-sent:
				err = werr
			default:
			}
			if ctx.Err() != nil {
				err = fmt.Errorf("no answer: %w", ctx.Err())
			}
			return Reply{}, fmt.Errorf("STUN server %s: %w", server, err)
		}
		a, ok := parseResponse(buf[:n], id)
		if ok {
			return a, nil
		}
	}
}

// parseResponse reads a Binding success response to the transaction id;
// anything else (a stray datagram, an error response) is ignored.
func parseResponse(b []byte, id transactionID) (Reply, bool) {
	m, ok := decode(b)
	if !ok || m.id != id || m.typ != typeBindingSuccess {
		return Reply{}, false
	}
	var addr netip.AddrPort
	if v, has := m.attrs[attrXORMappedAddress]; has {
		addr, ok = address(v, true, id)
	} else if v, has := m.attrs[attrMappedAddress]; has {
		addr, ok = address(v, false, id)
	} else {
		ok = false
	}
	if !ok || !addr.IsValid() {
		return Reply{}, false
	}
	return Reply{Addr: addr, Software: string(m.attrs[attrSoftware])}, true
}

// Serve answers STUN Binding requests arriving on conn with the address
// each came from, until conn is closed; other datagrams are ignored. It
// returns the error that ended reading.
func Serve(conn net.PacketConn) error {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return err
		}
		resp, ok := respond(buf[:n], from)
		if !ok {
			continue
		}
		conn.WriteTo(resp, from)
	}
}

// respond builds the answer to one datagram from "from", if it is a
// Binding request.
func respond(b []byte, from net.Addr) ([]byte, bool) {
	req, ok := decode(b)
	if !ok || req.typ != typeBindingRequest {
		return nil, false
	}
	udp, ok := from.(*net.UDPAddr)
	if !ok {
		return nil, false
	}
	ap := udp.AddrPort()
	if !ap.IsValid() {
		return nil, false
	}
	return encode(typeBindingSuccess, req.id, attr{attrXORMappedAddress, xorAddress(ap, req.id)}, attr{attrSoftware, []byte(software)}), true
}
