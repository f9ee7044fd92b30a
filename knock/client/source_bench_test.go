package client

import (
	"context"
	"net"
	"net/netip"
	"testing"

	"sknock/knock/client/stun"
)

// benchSource measures what --source-ip auto adds before a knock: the
// local address toward the host and the public address from a STUN
// server one loopback hop away (a LAN is a few hundred microseconds
// more), cold (no cache) or from the cache file.
func benchSource(b *testing.B, cached bool) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go stun.Serve(conn)
	b.Setenv("XDG_CACHE_HOME", b.TempDir())
	c, err := newClient(nil, nil, nil, &Config{Source: SourceAuto, STUNServers: []string{conn.LocalAddr().String()}, NoSTUNCache: !cached})
	if err != nil {
		b.Fatal(err)
	}
	host := netip.MustParseAddr("127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		tg := target{host: host}
		if err := c.chooseSource(context.Background(), &tg); err != nil || !tg.source.IsValid() {
			b.Fatalf("chooseSource: %v (source %s)", err, tg.source)
		}
	}
}

func BenchmarkSourceAutoCold(b *testing.B)   { benchSource(b, false) }
func BenchmarkSourceAutoCached(b *testing.B) { benchSource(b, true) }

// BenchmarkSourceLocal is the baseline: the local address only.
func BenchmarkSourceLocal(b *testing.B) {
	c, err := newClient(nil, nil, nil, &Config{Source: SourceLocal})
	if err != nil {
		b.Fatal(err)
	}
	host := netip.MustParseAddr("127.0.0.1")
	b.ReportAllocs()
	for b.Loop() {
		tg := target{host: host}
		if err := c.chooseSource(context.Background(), &tg); err != nil {
			b.Fatal(err)
		}
	}
}
