package gate

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"sknock/packet"
)

// BenchmarkVerdictGrantedFlood is the engine's share of bench.sh's row
// 3b: SYNs from a granted source to one port, from random source ports
// (as trafgen's drnd(1024, 65535)), each recorded in the connection
// record (made here as at the first grant).
func BenchmarkVerdictGrantedFlood(b *testing.B) {
	e := NewEngine(Config{Policy: PolicyDrop}, nil)
	e.ConnsCapacity()
	src := netip.MustParseAddr("198.18.0.2")
	e.Grants().Add(Grant{Source: src, Proto: packet.TCP, Port: 2261}, testCert(1), time.Now().Add(time.Hour))
	ports := make([]uint16, 1<<16)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range ports {
		ports[i] = uint16(1024 + rng.IntN(65536-1024))
	}
	h := header(src, packet.TCP, 2261)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.SrcPort = ports[i&(len(ports)-1)]
		if v, _ := e.Verdict(&h, now); v != packet.Accept {
			b.Fatal(v)
		}
	}
}
