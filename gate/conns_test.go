package gate

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"sknock/packet"
)

func connHeader(i int) packet.Header {
	src := netip.AddrFrom4([4]byte{198, 18, byte(i >> 16), byte(i >> 8)})
	return packet.Header{Family: 4, Proto: packet.TCP, Src: src, Dst: netip.MustParseAddr("198.19.0.1"), SrcPort: uint16(1024 + i&0xff), DstPort: 22}
}

func connOfHeader(h packet.Header) Conn {
	return Conn{Proto: h.Proto, Src: netip.AddrPortFrom(h.Src, h.SrcPort), Dst: netip.AddrPortFrom(h.Dst, h.DstPort)}
}

// TestConnTableMatchesAMap: random records, forgets and ends agree with
// a map at every step (open addressing with backward-shift deletion
// loses nothing), and the bound holds.
func TestConnTableMatchesAMap(t *testing.T) {
	const max = connShards * 64
	tab := newConnTable(max)
	model := map[Conn]CertID{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range 20000 {
		i := rng.IntN(3 * max)
		h := connHeader(i)
		c := connOfHeader(h)
		switch op := rng.IntN(10); {
		case op < 6:
			cert := testCert(byte(i % 7))
			ok := tab.record(&h, []CertID{cert}, int64(step))
			if _, had := model[c]; ok && !had {
				model[c] = cert
			}
			if !ok && len(model) < max/2 {
				t.Fatalf("step %d: record refused with %d of %d recorded", step, len(model), max)
			}
		case op < 9:
			_, had := model[c]
			if got := tab.forget(c); got != had {
				t.Fatalf("step %d: forget(%v) = %v, want %v", step, c, got, had)
			}
			delete(model, c)
		default:
			cert := testCert(byte(rng.IntN(7)))
			got := tab.end(map[CertID]error{cert: nil})
			for _, g := range got {
				if model[g] != cert {
					t.Fatalf("step %d: end(%x) returned %v, attributed to %x", step, cert, g, model[g])
				}
				delete(model, g)
			}
			for c, id := range model {
				if id == cert {
					t.Fatalf("step %d: end(%x) left %v", step, cert, c)
				}
			}
		}
		if tab.len() != len(model) {
			t.Fatalf("step %d: %d recorded, model %d", step, tab.len(), len(model))
		}
	}
	for c := range model {
		if !tab.forget(c) {
			t.Fatalf("%v lost", c)
		}
	}
}

// TestConnTablePrune: a prune forgets the records of connections the dump
// lacks, but not those made after the dump began.
func TestConnTablePrune(t *testing.T) {
	tab := newConnTable(0)
	old, kept, late := connHeader(1), connHeader(2), connHeader(3)
	tab.record(&old, []CertID{testCert(1)}, 10)
	tab.record(&kept, []CertID{testCert(1)}, 10)
	tab.record(&late, []CertID{testCert(1)}, 30)
	if n := tab.prune(map[Conn]struct{}{connOfHeader(kept): {}}, 20); n != 1 {
		t.Errorf("prune forgot %d, want 1", n)
	}
	if tab.forget(connOfHeader(old)) || !tab.forget(connOfHeader(kept)) || !tab.forget(connOfHeader(late)) {
		t.Error("prune forgot the wrong records")
	}
}

// TestConnTableFullRefuses: a full shard refuses the connection (the gate
// then denies it) and signals that a prune is due; a retransmitted first
// packet of a recorded connection is still admitted.
func TestConnTableFullRefuses(t *testing.T) {
	e := NewEngine(Config{Policy: PolicyReject, MaxConns: connShards}, nil) // one a shard, and headroom
	src := netip.MustParseAddr("198.18.0.2")
	now := time.Now()
	e.Grants().Add(Grant{Source: src, Proto: packet.TCP, Port: 22}, testCert(1), now.Add(time.Hour))
	full := e.ConnsFull()
	accepted, refused := 0, 0
	var first packet.Header
	room := e.ConnsCapacity()
	for i := range 4 * room {
		h := packet.Header{Family: 4, Proto: packet.TCP, Src: src, Dst: netip.MustParseAddr("198.18.0.1"), SrcPort: uint16(40000 + i), DstPort: 22}
		switch v, _ := e.Verdict(&h, now); v {
		case packet.Accept:
			if accepted == 0 {
				first = h
			}
			accepted++
		default:
			refused++
		}
	}
	if accepted > room || accepted < connShards || refused == 0 {
		t.Errorf("accepted %d, refused %d with room for %d", accepted, refused, room)
	}
	select {
	case <-full:
	default:
		t.Error("no prune asked for")
	}
	if v, _ := e.Verdict(&first, now); v != packet.Accept {
		t.Errorf("a retransmitted first packet of a recorded connection: %v", v)
	}
	if s := e.Snapshot(); s.ConnsFull != uint64(refused) || s.Conns != accepted {
		t.Errorf("snapshot: %d full, %d conns; want %d and %d", s.ConnsFull, s.Conns, refused, accepted)
	}
}

// BenchmarkConnTable100k records 100,000 live connections, each under
// two shares, and reports the table's memory (its records and index,
// outside the heap and present from the start, plus its free lists on
// the heap) and the cost of a record.
func BenchmarkConnTable100k(b *testing.B) {
	const live = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	tab := newConnTable(live)
	certs := []CertID{testCert(1), testCert(2)}
	for i := range live {
		h := connHeader(i)
		if !tab.record(&h, certs, 1) {
			b.Fatalf("record %d refused", i)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportAllocs()
	h := connHeader(live + 1)
	for b.Loop() {
		tab.record(&h, certs, 2)
		tab.forget(connOfHeader(h))
	}
	runtime.KeepAlive(tab)
	// After the loop: b.Loop's start resets the reported metrics.
	resident := 0
	for i := range tab.shards {
		s := &tab.shards[i]
		resident += len(s.recs)*int(unsafe.Sizeof(connRecord{})) + len(s.index)*int(unsafe.Sizeof(s.index[0]))
	}
	b.ReportMetric(float64(resident+int(after.HeapAlloc-before.HeapAlloc))/(1<<20), "MiB/100k-conns")
}

// TestResidentSliceIsZeroAndFreeable: the record's own memory comes
// zeroed, holds what is written, and unmaps once.
func TestResidentSliceIsZeroAndFreeable(t *testing.T) {
	for _, n := range []int{1, 1000, 3 << 18} {
		s, free := residentSlice[uint64](n)
		if len(s) != n {
			t.Fatalf("len %d, want %d", len(s), n)
		}
		for i := range s {
			if s[i] != 0 {
				t.Fatalf("n=%d: element %d is %d, want 0", n, i, s[i])
			}
			s[i] = uint64(i)
		}
		if s[n-1] != uint64(n-1) {
			t.Errorf("n=%d: last element %d", n, s[n-1])
		}
		free()
	}
}

// TestConnRecordLayout: a record is two whole cache lines, and the first
// holds everything a lookup and a one-share record touch.
func TestConnRecordLayout(t *testing.T) {
	var r connRecord
	if size := unsafe.Sizeof(r); size != 128 {
		t.Errorf("connRecord is %d bytes, want 128", size)
	}
	if end := unsafe.Offsetof(r.certs) + unsafe.Sizeof(r.certs[0]); end > 64 {
		t.Errorf("the first certificate ends at byte %d, past the first cache line", end)
	}
	if end := unsafe.Offsetof(r.at) + unsafe.Sizeof(r.at); end > 64 {
		t.Errorf("at ends at byte %d, past the first cache line", end)
	}
}
