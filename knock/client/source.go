package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"sknock/knock/client/addrecho"
	"sknock/knock/client/stun"
)

// SourceMode says which client address knocks embed.
type SourceMode int

// The source address modes.
const (
	// SourceDefault embeds the public address learnt from the address
	// echo (Config.AddressURL; STUN on request) when the local address
	// toward the host is internal (private, shared or link-local) and the
	// host's is not, and the local address otherwise.
	SourceDefault SourceMode = iota
	// SourceLocal embeds the local address the kernel sends from toward
	// the host.
	SourceLocal
	// SourceAuto embeds the public address learnt from the address echo
	// (STUN on request); when it does not answer the knock is not sent.
	SourceAuto
)

// String returns "default", "local" or "auto".
func (m SourceMode) String() string {
	switch m {
	case SourceLocal:
		return "local"
	case SourceAuto:
		return "auto"
	}
	return "default"
}

// shared is RFC 6598's shared address space (carrier-grade NAT).
var shared = netip.MustParsePrefix("100.64.0.0/10")

// Internal reports whether a is an address that does not reach the public
// Internet as itself: private (RFC 1918, fc00::/7), shared (100.64/10) or
// link-local (169.254/16, fe80::/10). A knock embedding such an address
// toward a public host meets NAT on its way and is refused as a source
// mismatch.
func Internal(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsPrivate() || shared.Contains(a) || a.IsLinkLocalUnicast()
}

// NeedsPublicAddress reports whether a knock from local to host should
// embed the learnt public address rather than local: local is internal
// and host is not.
func NeedsPublicAddress(local, host netip.Addr) bool {
	return Internal(local) && !Internal(host) && !host.Unmap().IsLoopback()
}

// needsPublicAddress is NeedsPublicAddress with Config.InternalPrefixes
// counted as internal too.
func (c *Client) needsPublicAddress(local, host netip.Addr) bool {
	internal := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range c.cfg.InternalPrefixes {
			if p.Contains(a) {
				return true
			}
		}
		return Internal(a)
	}
	return internal(local) && !internal(host) && !host.Unmap().IsLoopback()
}

// localAddrToward returns the address the kernel would send from toward
// host: connecting a UDP socket picks the route and sends nothing.
func localAddrToward(host netip.Addr) (netip.Addr, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(host, MinKnockPort)))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %s: %w", host, err)
	}
	defer conn.Close()
	return conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// chooseSource fills in t.local and, unless knocks should embed the
// address their socket sends from, t.source: the configured address, or
// the learnt public one. It fails only when Source is SourceAuto and the
// discovery fails; in default mode a failure is remembered in
// t.stunErr, for the message if the port does not open.
func (c *Client) chooseSource(ctx context.Context, t *target) error {
	local, err := c.cfg.LocalAddr(t.host)
	if err != nil {
		return err
	}
	t.local = local
	if src := c.sourceFor(t.host); src.IsValid() {
		t.source, t.how = src, "--source-ip"
		return nil
	}
	switch c.cfg.Source {
	case SourceLocal:
		t.how = "local"
		return nil
	case SourceDefault:
		if !c.needsPublicAddress(local, t.host) {
			t.how = "local"
			return nil
		}
	}
	network := "udp4"
	if t.host.Is6() {
		network = "udp6"
	}
	public, err := c.cfg.Discover(ctx, network, local)
	if err == nil && public.Unmap().Is4() != t.host.Is4() {
		err = fmt.Errorf("%s answered %s, not an address of %s's family", c.discoveryName(), public, t.host)
	}
	public = public.Unmap()
	if err != nil {
		t.stunErr = err
		if c.cfg.Source == SourceAuto {
			return fmt.Errorf("%w: --source-ip auto: %w; if this host is behind NAT, set --source-ip to its public address (the router's)", ErrNoPublicAddress, err)
		}
		t.how = "local"
		return nil
	}
	t.source, t.stunAddr, t.how = public, public, c.discoveryName()
	return nil
}

// discoveryName names how the public address is learnt, for messages.
func (c *Client) discoveryName() string {
	if c.cfg.UseSTUN {
		return "STUN"
	}
	return "the address echo"
}

// ErrNoPublicAddress is returned (wrapped) when --source-ip auto could
// not learn the public address.
var ErrNoPublicAddress = errors.New("cannot learn the public address")

// sourceFor returns the configured source address of host's family, or
// the zero Addr.
func (c *Client) sourceFor(host netip.Addr) netip.Addr {
	if a := c.cfg.SourceIP; a.IsValid() && a.Is4() == host.Is4() {
		return a
	}
	return netip.Addr{}
}

// hint explains a port that did not open, when the client can tell more
// than "no answer": NAT, or the difference between silence and a reset.
func (t *target) hint(lastErr error) string {
	embedded := t.source
	if !embedded.IsValid() {
		embedded = t.local
	}
	switch {
	case t.stunAddr.IsValid() && embedded != t.stunAddr:
		return fmt.Sprintf("the knock embedded %s but address discovery sees this host as %s: behind NAT, use --source-ip auto or --source-ip %s", embedded, t.stunAddr, t.stunAddr)
	case Internal(embedded) && !Internal(t.host):
		why := ""
		if t.stunErr != nil {
			why = " (address discovery: " + oneLine(t.stunErr) + ")"
		}
		return fmt.Sprintf("the knock embedded the private address %s; behind NAT the gatekeeper sees another and refuses it as source_mismatch: use --source-ip auto or --source-ip PUBLIC-ADDRESS%s", embedded, why)
	case isRefused(lastErr):
		return fmt.Sprintf("%s answered with a reset: under policy reject the knock was refused (the gatekeeper's knock log line says why); under policy drop the port is open and nothing listens on it", t.host)
	}
	return fmt.Sprintf("the gatekeeper answers no knock, granted or refused: its knock log line for client %s (the embedded address, %s) holds the reason", embedded, t.how)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// DefaultSTUNCacheTTL is how long a public address learnt from the
// address echo is reused for the same local address and endpoint.
const DefaultSTUNCacheTTL = 2 * time.Minute

// discoverHTTPS asks the address echo (through the cache) for the public
// address of network, dialling in that family; it notes the echo's Date
// for the clock check.
func (c *Client) discoverHTTPS(ctx context.Context, network string, local netip.Addr) (netip.Addr, error) {
	endpoint := c.cfg.AddressURL
	if endpoint == "" {
		endpoint = addrecho.DefaultURL
	}
	key := cacheKey(local, []string{endpoint})
	now := time.Now()
	if !c.cfg.NoSTUNCache && ctx.Value(freshKey{}) == nil {
		if a, ok := readSTUNCache(key, now); ok {
			return a, nil
		}
	}
	timeout := c.cfg.STUNTimeout
	if timeout <= 0 {
		timeout = addrecho.DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tcp := "tcp4"
	if network == "udp6" {
		tcp = "tcp6"
	}
	ans, err := addrecho.Ask(ctx, tcp, endpoint, c.cfg.AddressRoots)
	if err != nil {
		return netip.Addr{}, err
	}
	c.echo.note(ans.Date, c.cfg.Now())
	if !c.cfg.NoSTUNCache { // only authenticated answers are cached
		writeSTUNCache(key, ans.Addr, now)
	}
	return ans.Addr, nil
}

// discoverSTUN asks the configured STUN servers for the public address of
// network. Its answers are not authenticated, so they are not cached.
func (c *Client) discoverSTUN(ctx context.Context, network string, _ netip.Addr) (netip.Addr, error) {
	servers := c.cfg.STUNServers
	if len(servers) == 0 {
		servers = stun.DefaultServers
	}
	timeout := c.cfg.STUNTimeout
	if timeout <= 0 {
		timeout = stun.DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ans, err := stun.Discover(ctx, network, servers)
	if err != nil {
		return netip.Addr{}, err
	}
	return ans.Addr, nil
}

// freshKey in a context asks discoverSTUN to skip the cache.
type freshKey struct{}

// rediscover asks STUN again, past the cache, after a knock to the i-th
// address that embedded a STUN-learnt address did not open the port: the cached answer may be
// another network's (a laptop that moved between two routers handing out
// the same private address). It reports whether the address changed.
func (c *Client) rediscover(ctx context.Context, ts *targets, i int) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := &ts.list[i%len(ts.list)]
	if !t.stunAddr.IsValid() || t.how == "--source-ip" || t.refreshed {
		return false
	}
	t.refreshed = true
	network := "udp4"
	if t.host.Is6() {
		network = "udp6"
	}
	public, err := c.cfg.Discover(context.WithValue(ctx, freshKey{}, true), network, t.local)
	if err != nil || public == t.source {
		return false
	}
	t.source, t.stunAddr = public, public
	return true
}

// echoSeen is the last Date the address echo sent, with the local time it
// arrived: an authenticated reading of the time.
type echoSeen struct {
	mu         sync.Mutex
	date, seen time.Time
}

func (e *echoSeen) note(date, seen time.Time) {
	if date.IsZero() {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.date, e.seen = date, seen
}

// skew returns how far the local clock was ahead of the echo's when it
// answered, and whether it answered with a date.
func (e *echoSeen) skew() (time.Duration, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.date.IsZero() {
		return 0, false
	}
	// A Date has whole seconds, truncated: the answer was made half a
	// second after it, on average.
	return e.seen.Sub(e.date) - time.Second/2, true
}
