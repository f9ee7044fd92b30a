package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"sknock/knock"
	"sknock/packet"
)

// target is one address of the host: where knocks and probes go, the
// local address toward it, and the client address the knocks embed when
// it is not the local one (a configured or STUN-learnt address).
type target struct {
	host     netip.Addr
	local    netip.Addr
	source   netip.Addr // zero: embed the address the socket sends from
	how      string     // how the embedded address was chosen, for messages
	stunAddr netip.Addr // what STUN reported, when it was asked
	stunErr  error      // why STUN did not answer, when it was asked
	// refreshed: STUN was asked again, past the cache, after a failure.
	refreshed bool
}

// targets is a resolved host: its addresses in the order they are tried.
// The source address of each is chosen when it is first used.
type targets struct {
	name string // as given, for messages
	mu   sync.Mutex
	list []target
	done []bool // list[i]'s source was chosen
}

// at returns a copy of the i-th address to try (cycling), with its
// source chosen. Concurrent verifications share ts; each works on copies.
func (c *Client) at(ctx context.Context, ts *targets, i int) (*target, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	i %= len(ts.list)
	t := &ts.list[i]
	if !ts.done[i] {
		if err := c.chooseSource(ctx, t); err != nil {
			return nil, fmt.Errorf("knock %s: %w", t.host, err)
		}
		ts.done[i] = true
	}
	cp := *t
	return &cp, nil
}

// Knock sends one knock per request to host (a name or an address), then
// verifies every TCP port concurrently, knocking a port again when it did
// not open in time (on the host's other address family, when it has
// one). results has one entry per request, in order; err is nil when
// every request succeeded, else it joins the failures (each also in its
// Result). When host cannot be resolved, results is nil.
//
// A request the client's certificate does not authorise fails at once and
// sends nothing.
func (c *Client) Knock(ctx context.Context, host string, reqs ...Request) ([]Result, error) {
	ts, err := c.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	results := make([]Result, len(reqs))
	for i, req := range reqs {
		results[i] = c.first(ctx, ts, req, start)
	}
	if !c.cfg.NoVerify {
		var wg sync.WaitGroup
		for i := range results {
			if results[i].Request.Proto != packet.TCP || results[i].Status == StatusFailed {
				continue
			}
			wg.Go(func() {
				defer results[i].pre.stop()
				if conn := c.verify(ctx, ts, &results[i], start); conn != nil {
					// The probe only proves the port is open; close it
					// at once (it consumed one accept of the service).
					conn.Close()
				}
			})
		}
		wg.Wait()
	}
	var errs []error
	for _, r := range results {
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
	}
	return results, errors.Join(errs...)
}

// Connect knocks for TCP port on host, waits for the port to open and
// returns the connection that proved it, for a caller that wants to use
// the service (an ssh ProxyCommand): on a host with addresses of both
// families, the connection is on the address whose knock opened the port.
// Config.NoVerify does not apply. On failure the Result says how far it
// got.
func (c *Client) Connect(ctx context.Context, host string, port uint16) (net.Conn, Result, error) {
	req := Request{Proto: packet.TCP, Port: port}
	ts, err := c.resolve(ctx, host)
	if err != nil {
		return nil, Result{Request: req, Err: err}, err
	}
	start := time.Now()
	res := c.first(ctx, ts, req, start)
	defer res.pre.stop()
	if res.Status == StatusFailed {
		return nil, res, res.Err
	}
	conn := c.verify(ctx, ts, &res, start)
	if conn == nil {
		return nil, res, res.Err
	}
	return conn, res, nil
}

// first sends the first knock for req and returns its Result: StatusSent,
// or StatusFailed with the error. When the host has another address to
// try and the port will be verified, a knock that could not be sent to
// the first address (no route, a firewall of this host) is left to
// verify, which goes on with the next: Knocks stays 0.
func (c *Client) first(ctx context.Context, ts *targets, req Request, start time.Time) Result {
	res := Result{Request: req}
	if err := c.authorised(req); err != nil {
		res.Err = err
		return res
	}
	verified := req.Proto == packet.TCP && !c.cfg.NoVerify
	var errs []error
	for i := range ts.list {
		t, err := c.at(ctx, ts, i)
		if err == nil && verified && res.pre == nil {
			// A connection started before the knock: if it opens before
			// the knock's own probe could, the port was open already.
			res.pre = c.preConnect(ctx, netip.AddrPortFrom(t.host, req.Port))
			res.Probes++
			if !c.customDial {
				// The gatekeeper holds a SYN that arrives while a knock from
				// its source is being decided and lets it in with the grant;
				// a short gap makes the gate judge this SYN before the
				// knock is read, so that it connects only on a grant that
				// was there before the knock.
				time.Sleep(preKnockGap)
			}
			res.Embedded = t.source
			if !res.Embedded.IsValid() {
				res.Embedded = t.local
			}
		}
		if err == nil {
			err = c.send(ctx, t, req)
			if err != nil {
				err = fmt.Errorf("knock %s on %s: %w", req, t.host, err)
			}
		}
		if err == nil {
			res.Knocks, res.Status = 1, StatusSent
			return res
		}
		errs = append(errs, err)
		if verified && len(ts.list) > 1 {
			res.Status, res.Err = StatusSent, nil
			res.firstErr = err
			return res
		}
	}
	res.Err = errors.Join(errs...)
	res.Elapsed = time.Since(start)
	return res
}

// resolve finds host's addresses in the configured family (the family of
// Config.SourceIP when it is set), in the order to try them: the
// resolver's first, then alternating families (RFC 8305's interleaving),
// at most one address of each family.
func (c *Client) resolve(ctx context.Context, host string) (*targets, error) {
	network := c.cfg.Network
	if network == "" {
		network = "ip"
	}
	if c.cfg.SourceIP.IsValid() {
		network = "ip6"
		if c.cfg.SourceIP.Is4() {
			network = "ip4"
		}
	}
	ts := &targets{name: host}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if (network == "ip4" && !a.Is4()) || (network == "ip6" && !a.Is6()) {
			if c.cfg.SourceIP.IsValid() {
				return nil, fmt.Errorf("source address %s and host %s are of different families", c.cfg.SourceIP, a)
			}
			return nil, fmt.Errorf("host %s is not an %s address", host, familyName(network))
		}
		ts.list = []target{{host: a}}
	} else {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return nil, fmt.Errorf("resolve %s: no %s address", host, familyName(network))
		}
		for _, a := range happyOrder(addrs) {
			ts.list = append(ts.list, target{host: a})
		}
	}
	ts.done = make([]bool, len(ts.list))
	return ts, nil
}

func familyName(network string) string {
	switch network {
	case "ip4":
		return "IPv4"
	case "ip6":
		return "IPv6"
	}
	return "IP"
}

// send seals a fresh knock for req (a re-knock must not repeat a datagram:
// the gatekeeper refuses replays) and sends it to the knock port.
func (c *Client) send(ctx context.Context, t *target, req Request) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	port := c.cfg.KnockPort
	if port == 0 {
		port = uint16(MinKnockPort + rand.IntN(MaxKnockPort-MinKnockPort+1))
	}
	dst := netip.AddrPortFrom(t.host, port)
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	defer conn.Close()
	source := t.source
	if !source.IsValid() {
		// Connecting the socket chose the route and with it the address
		// the kernel sends from: the one to embed.
		source = conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	}
	k := &knock.Knock{
		Proto:       req.Proto,
		Port:        req.Port,
		ClientIP:    source,
		Timestamp:   uint32(c.cfg.Now().Unix()),
		Certificate: c.cert,
	}
	datagram, err := knock.Seal(k, c.key, c.server, nil)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if _, err := conn.Write(datagram); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// happyOrder returns the addresses to knock, in order: the resolver's
// first, then the first of the other family, if any (RFC 8305 §4's
// interleaving, one address of each family). Mapped IPv4 addresses count
// as IPv4.
func happyOrder(addrs []netip.Addr) []netip.Addr {
	if len(addrs) == 0 {
		return nil
	}
	first := addrs[0].Unmap()
	order := []netip.Addr{first}
	for _, a := range addrs[1:] {
		if a = a.Unmap(); a.Is4() != first.Is4() {
			return append(order, a)
		}
	}
	return order
}
