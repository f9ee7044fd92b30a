package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
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

// Knock sends the requests to host (a name or an address) — in v2 one
// knock for up to knock.MaxRequests of them, in v1 one knock each — then
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
	for _, group := range c.groups(reqs) {
		c.first(ctx, ts, reqs, group, results, start)
	}
	if !c.cfg.NoVerify {
		var wg sync.WaitGroup
		for i := range results {
			if results[i].Request.Proto != packet.TCP || results[i].Status == StatusFailed {
				results[i].pre.stop()
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
	results := make([]Result, 1)
	c.first(ctx, ts, []Request{req}, []int{0}, results, start)
	res := results[0]
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

// groups splits the indices of reqs into the knocks that carry them: in
// v1 one each; in v2 up to knock.MaxRequests distinct ones each (a
// request given twice rides with its first copy's knock).
func (c *Client) groups(reqs []Request) [][]int {
	var out [][]int
	if c.cfg.Protocol == 1 {
		for i := range reqs {
			out = append(out, []int{i})
		}
		return out
	}
	var cur []int
	for i, req := range reqs {
		if !slices.ContainsFunc(cur, func(j int) bool { return reqs[j] == req }) && len(cur) == knock.MaxRequests {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, i)
	}
	return append(out, cur)
}

// first sends the first knock for the requests reqs[i], i in group, and
// fills in their results: StatusSent, or StatusFailed with the error. A
// request the certificate does not authorise fails at once and is left
// out of the knock. When the host has another address to try and every
// request will be verified (TCP), a knock that could not be sent to the
// first address (no route, a firewall of this host) is left to verify,
// which goes on with the next: Knocks stays 0.
func (c *Client) first(ctx context.Context, ts *targets, reqs []Request, group []int, results []Result, start time.Time) {
	var send []Request
	var sent []int
	verified := !c.cfg.NoVerify
	for _, i := range group {
		results[i] = Result{Request: reqs[i]}
		if err := c.authorised(reqs[i]); err != nil {
			results[i].Err = err
			continue
		}
		if !slices.Contains(send, reqs[i]) {
			send = append(send, reqs[i])
		}
		sent = append(sent, i)
		verified = verified && reqs[i].Proto == packet.TCP
	}
	if len(send) == 0 {
		return
	}
	var errs []error
	started := false // the connections before the knock
	for i := range ts.list {
		t, err := c.at(ctx, ts, i)
		if err == nil && !c.cfg.NoVerify && !started {
			started = true
			c.preConnect(ctx, t, reqs, sent, results)
		}
		if err == nil {
			err = c.send(ctx, t, send...)
			if err != nil {
				err = fmt.Errorf("knock %s on %s: %w", requestsString(send), t.host, err)
			}
		}
		if err == nil {
			for _, j := range sent {
				results[j].Knocks, results[j].Status = 1, StatusSent
			}
			return
		}
		errs = append(errs, err)
		if verified && len(ts.list) > 1 {
			for _, j := range sent {
				results[j].Status, results[j].Err = StatusSent, nil
				results[j].firstErr = err
			}
			return
		}
	}
	for _, j := range sent {
		results[j].Err = errors.Join(errs...)
		results[j].Elapsed = time.Since(start)
	}
}

// preConnect starts, before the first knock to t, a connection to each
// TCP port of reqs[j], j in sent: if one opens before the knock's own
// probe could, its port was open already. It notes the address the knock
// embeds in each result.
func (c *Client) preConnect(ctx context.Context, t *target, reqs []Request, sent []int, results []Result) {
	for _, j := range sent {
		if reqs[j].Proto != packet.TCP {
			continue
		}
		results[j].pre = c.preConnectTo(ctx, netip.AddrPortFrom(t.host, reqs[j].Port))
		results[j].Probes++
	}
	if !c.customDial {
		// The gatekeeper holds a SYN that arrives while a knock from its
		// source is being decided and lets it in with the grant; a short
		// gap makes the gate judge these SYNs before the knock is read,
		// so that they connect only on a grant that was there before the
		// knock.
		time.Sleep(preKnockGap)
	}
	embedded := t.source
	if !embedded.IsValid() {
		embedded = t.local
	}
	for _, j := range sent {
		results[j].Embedded = embedded
	}
}

// requestsString writes requests as the command line does: tcp/22,udp/8000.
func requestsString(reqs []Request) string {
	parts := make([]string, len(reqs))
	for i, r := range reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
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

// send seals a fresh knock for reqs (a re-knock must not repeat a
// datagram: the gatekeeper refuses replays) and sends it to the knock
// port: one v2 knock for all of them, or, in v1, one knock for the one
// request.
func (c *Client) send(ctx context.Context, t *target, reqs ...Request) error {
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
	datagram, err := c.seal(source, reqs)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if _, err := conn.Write(datagram); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// seal makes the datagram of one knock for reqs from source, in the
// configured wire version.
func (c *Client) seal(source netip.Addr, reqs []Request) ([]byte, error) {
	now := c.cfg.Now()
	if c.cfg.Protocol == 1 {
		if len(reqs) != 1 {
			return nil, fmt.Errorf("a v1 knock carries one request, not %d", len(reqs))
		}
		k := &knock.Knock{
			Proto:       reqs[0].Proto,
			Port:        reqs[0].Port,
			ClientIP:    source,
			Timestamp:   uint32(now.Unix()),
			Certificate: c.cert,
		}
		return knock.Seal(k, c.key, c.server, nil)
	}
	k := &knock.KnockV2{
		TimestampMillis: uint64(max(now.UnixMilli(), 0)),
		ClientIP:        source,
		Chain:           [][]byte{c.cert},
	}
	for _, r := range reqs {
		k.Requests = append(k.Requests, knock.Request{Proto: r.Proto, Port: r.Port})
	}
	return knock.SealV2(k, c.key, c.target, nil)
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
