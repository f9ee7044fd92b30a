package soak

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Prober tries every protected port continuously from addresses that
// never knock, and reports each time it gets through: a TCP connection
// accepted, or a UDP datagram echoed. Each attempt from an address uses
// the next source port of 20000-59999 in turn, so that no attempt
// reuses the tuple of a recent one: a flow begun while the rules were
// flushed stays known to conntrack (UDP: up to 120 s), and a later
// attempt that happened to pick its port would pass as part of it.
type Prober struct {
	// Sources are the local addresses it binds to; each probes the
	// Targets of its own family.
	Sources []netip.Addr
	Targets []netip.Addr // the gatekeeper's addresses
	TCP     []int
	UDP     []int
	// Timeout bounds each attempt (the policy drops: a refused attempt
	// takes the whole timeout).
	Timeout time.Duration
	Log     *Log
	tries   atomic.Int64
}

// Run probes until ctx ends, reporting its attempt count every 10 s.
func (p *Prober) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, src := range p.Sources {
		for _, dst := range p.Targets {
			if src.Is4() != dst.Is4() {
				continue
			}
			wg.Go(func() { p.probeFrom(ctx, src, dst) })
		}
	}
	wg.Go(func() {
		for sleepCtx(ctx, 10*time.Second) {
			p.Log.Add(Event{Kind: KindProbeStats, Count: p.tries.Swap(0)})
		}
		p.Log.Add(Event{Kind: KindProbeStats, Count: p.tries.Swap(0)})
	})
	wg.Wait()
}

// Source ports the prober uses, in turn.
const firstProbePort, lastProbePort = 20000, 59999

func (p *Prober) probeFrom(ctx context.Context, src, dst netip.Addr) {
	next := firstProbePort
	sport := func() int {
		port := next
		if next++; next > lastProbePort {
			next = firstProbePort
		}
		return port
	}
	for ctx.Err() == nil {
		for _, port := range p.TCP {
			if ctx.Err() != nil {
				return
			}
			p.tries.Add(1)
			if from, ok := p.tryTCP(ctx, src, sport(), dst, port); ok {
				p.Log.Add(Event{Kind: KindProbe, Proto: "tcp", Port: port, Src: from})
			}
		}
		for _, port := range p.UDP {
			if ctx.Err() != nil {
				return
			}
			p.tries.Add(1)
			if from, ok := p.tryUDP(src, sport(), dst, port); ok {
				p.Log.Add(Event{Kind: KindProbe, Proto: "udp", Port: port, Src: from})
			}
		}
	}
}

// tryTCP reports whether a connection from src to dst:port was
// accepted, and from which local address and port.
func (p *Prober) tryTCP(ctx context.Context, src netip.Addr, sport int, dst netip.Addr, port int) (from string, ok bool) {
	d := net.Dialer{Timeout: p.Timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: sport}}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(dst.String(), strconv.Itoa(port)))
	if err != nil {
		return "", false
	}
	defer conn.Close()
	return conn.LocalAddr().String(), true
}

// tryUDP reports whether a datagram from src to dst:port was answered,
// and from which local address and port it was sent.
func (p *Prober) tryUDP(src netip.Addr, sport int, dst netip.Addr, port int) (from string, ok bool) {
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice(), Port: sport}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, uint16(port))))
	if err != nil {
		return "", false
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("soak probe")); err != nil {
		return "", false
	}
	conn.SetReadDeadline(time.Now().Add(p.Timeout))
	buf := make([]byte, 64)
	if _, err = conn.Read(buf); err != nil {
		return "", false
	}
	return conn.LocalAddr().String(), true
}
