package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"sknock/knock/client/stun"
)

// SourceMode says which client address knocks embed.
type SourceMode int

// The source address modes.
const (
	// SourceDefault embeds the public address learnt by STUN when the
	// local address toward the host is internal (private, shared or
	// link-local) and the host's is not, and the local address otherwise.
	SourceDefault SourceMode = iota
	// SourceLocal embeds the local address the kernel sends from toward
	// the host.
	SourceLocal
	// SourceAuto embeds the public address learnt by STUN; when no STUN
	// server answers the knock is not sent.
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
// embed the public address learnt by STUN rather than local: local is
// internal and host is not.
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
// the public one STUN reports. It fails only when Source is SourceAuto
// and STUN does not answer; in default mode a STUN failure is remembered
// in t.stunErr, for the message if the port does not open.
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
		err = fmt.Errorf("STUN answered %s, not an address of %s's family", public, t.host)
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
	t.source, t.stunAddr, t.how = public, public, "STUN"
	return nil
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
		return fmt.Sprintf("the knock embedded %s but STUN sees this host as %s: behind NAT, use --source-ip auto or --source-ip %s", embedded, t.stunAddr, t.stunAddr)
	case Internal(embedded) && !Internal(t.host):
		why := ""
		if t.stunErr != nil {
			why = " (STUN: " + oneLine(t.stunErr) + ")"
		}
		return fmt.Sprintf("the knock embedded the private address %s; behind NAT the gatekeeper sees another and refuses it as source_mismatch: use --source-ip auto or --source-ip PUBLIC-ADDRESS%s", embedded, why)
	case isRefused(lastErr):
		return fmt.Sprintf("%s answered with a reset: under policy reject the knock was refused (the gatekeeper's knock log line says why); under policy drop the port is open and nothing listens on it", t.host)
	}
	return fmt.Sprintf("the gatekeeper answers no knock, granted or refused: its knock log line for client %s (the embedded address, %s) holds the reason", embedded, t.how)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

// DefaultSTUNCacheTTL is how long a public address learnt by STUN is
// reused for the same local address and servers.
const DefaultSTUNCacheTTL = 2 * time.Minute

// discoverSTUN asks the configured STUN servers (through the cache) for
// the public address of network.
func (c *Client) discoverSTUN(ctx context.Context, network string, local netip.Addr) (netip.Addr, error) {
	servers := c.cfg.STUNServers
	if len(servers) == 0 {
		servers = stun.DefaultServers
	}
	key := cacheKey(local, servers)
	now := time.Now()
	if !c.cfg.NoSTUNCache && ctx.Value(freshKey{}) == nil {
		if a, ok := readSTUNCache(key, now); ok {
			return a, nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.STUNTimeout)
	defer cancel()
	ans, err := stun.Discover(ctx, network, servers)
	if err != nil {
		return netip.Addr{}, err
	}
	if !c.cfg.NoSTUNCache {
		writeSTUNCache(key, ans.Addr, now)
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
	if t.how != "STUN" || t.refreshed {
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
