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

// target is a resolved host: where knocks and probes go, and the client
// address the knocks embed when Config.SourceIP sets it (otherwise each
// knock embeds the address its socket sends from).
type target struct {
	host   netip.Addr
	source netip.Addr
}

// Knock sends one knock per request to host (a name or an address), then
// verifies every TCP port concurrently, knocking a port again when it did
// not open in time. results has one entry per request, in order; err is
// nil when every request succeeded, else it joins the failures (each also
// in its Result). When host cannot be resolved, results is nil.
func (c *Client) Knock(ctx context.Context, host string, reqs ...Request) ([]Result, error) {
	t, err := c.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	results := make([]Result, len(reqs))
	for i, req := range reqs {
		results[i] = c.first(ctx, t, req, start)
	}
	if !c.cfg.NoVerify {
		var wg sync.WaitGroup
		for i := range results {
			if results[i].Request.Proto != packet.TCP || results[i].Status == StatusFailed {
				continue
			}
			wg.Go(func() {
				if conn := c.verify(ctx, t, &results[i], start); conn != nil {
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
// the service (an ssh ProxyCommand). Config.NoVerify does not apply. On
// failure the Result says how far it got.
func (c *Client) Connect(ctx context.Context, host string, port uint16) (net.Conn, Result, error) {
	req := Request{Proto: packet.TCP, Port: port}
	t, err := c.resolve(ctx, host)
	if err != nil {
		return nil, Result{Request: req, Err: err}, err
	}
	start := time.Now()
	res := c.first(ctx, t, req, start)
	if res.Status == StatusFailed {
		return nil, res, res.Err
	}
	conn := c.verify(ctx, t, &res, start)
	if conn == nil {
		return nil, res, res.Err
	}
	return conn, res, nil
}

// first sends the first knock for req and returns its Result: StatusSent,
// or StatusFailed with the error.
func (c *Client) first(ctx context.Context, t target, req Request, start time.Time) Result {
	res := Result{Request: req}
	if err := c.send(ctx, t, req); err != nil {
		res.Err = fmt.Errorf("knock %s on %s: %w", req, t.host, err)
		res.Elapsed = time.Since(start)
		return res
	}
	res.Knocks, res.Status = 1, StatusSent
	return res
}

// resolve finds host's address in the configured family and checks the
// configured source address against it.
func (c *Client) resolve(ctx context.Context, host string) (target, error) {
	network := c.cfg.Network
	if network == "" {
		network = "ip"
	}
	var t target
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		t.host = a.Unmap()
		if (network == "ip4" && !t.host.Is4()) || (network == "ip6" && !t.host.Is6()) {
			return t, fmt.Errorf("host %s is not an %s address", host, familyName(network))
		}
	} else {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
		if err != nil {
			return t, fmt.Errorf("resolve %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return t, fmt.Errorf("resolve %s: no %s address", host, familyName(network))
		}
		t.host = addrs[0].Unmap()
	}
	if c.cfg.SourceIP.IsValid() {
		t.source = c.cfg.SourceIP.Unmap()
		if t.source.Is4() != t.host.Is4() {
			return t, fmt.Errorf("source address %s and host %s are of different families", t.source, t.host)
		}
	}
	return t, nil
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
func (c *Client) send(ctx context.Context, t target, req Request) error {
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
