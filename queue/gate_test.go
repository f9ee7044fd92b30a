package queue_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

var (
	client4 = netip.MustParseAddr("198.18.0.2")
	server4 = netip.MustParseAddr("198.18.0.1")
	client6 = netip.MustParseAddr("fd00:5e::2")
	server6 = netip.MustParseAddr("fd00:5e::1")
)

// headerOpts compare Headers: addresses by value, nil and empty payloads
// alike.
var headerOpts = []cmp.Option{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}

// decideByPort accepts port 2000, drops 2001 and rejects 2002, and counts
// its calls.
type decideByPort struct{ calls atomic.Int64 }

func (d *decideByPort) decide(h *packet.Header) packet.Verdict {
	d.calls.Add(1)
	switch h.DstPort {
	case 2000:
		return packet.Accept
	case 2002:
		return packet.Reject
	}
	return packet.Drop
}

// startGate runs a gate over a fake socket until the test ends.
func startGate(t *testing.T, cfg queue.GateConfig) (*queue.GateReader, *queuetest.Socket) {
	t.Helper()
	fake := queuetest.New()
	cfg.Open = fake.Open
	g, err := queue.NewGate(cfg)
	if err != nil {
		t.Fatalf("NewGate: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return g, fake
}

func inject(t *testing.T, fake *queuetest.Socket, p queue.Packet) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fake.InjectPacket(ctx, p); err != nil {
		t.Fatalf("inject packet %d: %v", p.ID, err)
	}
}

func TestGateVerdicts(t *testing.T) {
	syn := func(dst uint16) []byte { return packettest.TCPPacket(client4, 40000, server4, dst, packet.TCPSyn) }
	tests := []struct {
		name       string
		rejectMark uint32
		give       queue.Packet
		want       queuetest.Verdict
		wantDecide bool
	}{
		{name: "accept repeats with the grant bit", give: queue.Packet{ID: 1, Data: syn(2000)}, want: queuetest.Verdict{ID: 1, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true}, wantDecide: true},
		{name: "accept keeps other mark bits", give: queue.Packet{ID: 2, Mark: 0x100, Data: syn(2000)}, want: queuetest.Verdict{ID: 2, Verdict: queue.NFRepeat, Mark: 0x100 | queue.DefaultAcceptMark, WithMark: true}, wantDecide: true},
		{name: "accept already carrying the grant bit is accepted", give: queue.Packet{ID: 12, Mark: queue.DefaultAcceptMark, Data: syn(2000)}, want: queuetest.Verdict{ID: 12, Verdict: queue.NFAccept}, wantDecide: true},
		{name: "drop", give: queue.Packet{ID: 3, Data: syn(2001)}, want: queuetest.Verdict{ID: 3, Verdict: queue.NFDrop}, wantDecide: true},
		{name: "reject repeats with mark", give: queue.Packet{ID: 4, Data: syn(2002)}, want: queuetest.Verdict{ID: 4, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true}, wantDecide: true},
		{name: "reject keeps other mark bits", give: queue.Packet{ID: 5, Mark: 0x100, Data: syn(2002)}, want: queuetest.Verdict{ID: 5, Verdict: queue.NFRepeat, Mark: 0x100 | queue.DefaultRejectMark, WithMark: true}, wantDecide: true},
		{name: "reject with configured mark", rejectMark: 0x40, give: queue.Packet{ID: 6, Data: syn(2002)}, want: queuetest.Verdict{ID: 6, Verdict: queue.NFRepeat, Mark: 0x40, WithMark: true}, wantDecide: true},
		{name: "ipv6 reject", give: queue.Packet{ID: 7, Data: packettest.TCPPacket(client6, 1, server6, 2002, packet.TCPSyn)}, want: queuetest.Verdict{ID: 7, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true}, wantDecide: true},
		{name: "already marked is dropped", give: queue.Packet{ID: 8, Mark: queue.DefaultRejectMark, Data: syn(2002)}, want: queuetest.Verdict{ID: 8, Verdict: queue.NFDrop}, wantDecide: true},
		{name: "unknown protocol dropped undecided", give: queue.Packet{ID: 9, Data: packettest.IP(client4, server4, 1, make([]byte, 8))}, want: queuetest.Verdict{ID: 9, Verdict: queue.NFDrop}},
		{name: "malformed dropped undecided", give: queue.Packet{ID: 10, Data: []byte{0x45, 0}}, want: queuetest.Verdict{ID: 10, Verdict: queue.NFDrop}},
		{name: "empty dropped undecided", give: queue.Packet{ID: 11}, want: queuetest.Verdict{ID: 11, Verdict: queue.NFDrop}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d decideByPort
			_, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, RejectMark: tt.rejectMark})
			inject(t, fake, tt.give)
			if diff := cmp.Diff([]queuetest.Verdict{tt.want}, fake.Verdicts()); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			if got := d.calls.Load() == 1; got != tt.wantDecide {
				t.Errorf("Decide called: %v, want %v", got, tt.wantDecide)
			}
		})
	}
}

// gateCounts is GateStats as plain numbers, for cmp.
type gateCounts struct {
	Packets, Accepted, Dropped, Rejected, Unknown, RejectLoops, ReceiveErrors, Overruns, VerdictErrors uint64
	VerdictMessages                                                                                    uint64
}

func countsOf(s *queue.GateStats) gateCounts {
	return gateCounts{
		Packets: s.Packets.Load(), Accepted: s.Accepted.Load(), Dropped: s.Dropped.Load(), Rejected: s.Rejected.Load(),
		Unknown: s.Unknown.Load(), RejectLoops: s.RejectLoops.Load(), ReceiveErrors: s.ReceiveErrors.Load(),
		Overruns: s.Overruns.Load(), VerdictErrors: s.VerdictErrors.Load(), VerdictMessages: s.VerdictMessages.Load(),
	}
}

func TestGateStats(t *testing.T) {
	var d decideByPort
	stats := new(queue.GateStats)
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, Stats: stats})
	if g.Stats() != stats {
		t.Errorf("Stats() is not the configured *GateStats")
	}
	for i, dst := range []uint16{2000, 2000, 2001, 2002} {
		inject(t, fake, queue.Packet{ID: uint32(i + 1), Data: packettest.TCPPacket(client4, uint16(i+1), server4, dst, packet.TCPSyn)})
	}
	inject(t, fake, queue.Packet{ID: 10, Mark: queue.DefaultRejectMark, Data: packettest.TCPPacket(client4, 10, server4, 2002, packet.TCPSyn)})
	inject(t, fake, queue.Packet{ID: 11, Data: []byte{0x60}})
	ctx := context.Background()
	if err := fake.InjectError(ctx, fmt.Errorf("recvmsg: %w", syscall.ENOBUFS)); err != nil {
		t.Fatal(err)
	}
	if err := fake.InjectError(ctx, errors.New("something else")); err != nil {
		t.Fatal(err)
	}
	fake.FailVerdicts(errors.New("netlink send failed"))
	inject(t, fake, queue.Packet{ID: 12, Data: packettest.TCPPacket(client4, 12, server4, 2000, packet.TCPSyn)})

	want := gateCounts{Packets: 7, Accepted: 3, Dropped: 3, Rejected: 1, Unknown: 1, RejectLoops: 1, ReceiveErrors: 2, Overruns: 1, VerdictErrors: 1, VerdictMessages: 6}
	if diff := cmp.Diff(want, countsOf(stats)); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestGateConfigDefaults(t *testing.T) {
	var d decideByPort
	_, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, NetNS: 7})
	inject(t, fake, queue.Packet{ID: 1}) // Open has happened once Serve runs
	want := []queue.SocketConfig{{Queue: 101, CopyRange: queue.DefaultGateCopyRange, MaxQueueLen: queue.DefaultGateMaxQueueLen, ReadBuffer: queue.DefaultReadBuffer, NetNS: 7}}
	if diff := cmp.Diff(want, fake.Configs()); diff != "" {
		t.Errorf("socket configs (-want +got):\n%s", diff)
	}
}

func TestGateRunTwice(t *testing.T) {
	var d decideByPort
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide})
	inject(t, fake, queue.Packet{ID: 1}) // the first Run is serving
	if err := g.Run(context.Background()); !errors.Is(err, queue.ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
}

func TestGateOpenError(t *testing.T) {
	boom := errors.New("no such queue")
	g, err := queue.NewGate(queue.GateConfig{Decide: func(*packet.Header) packet.Verdict { return packet.Accept },
		Open: func(queue.SocketConfig) (queue.Socket, error) { return nil, boom }})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Run(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Run = %v, want it to wrap %v", err, boom)
	}
}

func TestNewGateNeedsDecide(t *testing.T) {
	if _, err := queue.NewGate(queue.GateConfig{}); err == nil {
		t.Error("NewGate without Decide succeeded")
	}
}

// discardSocket is a Socket that accepts verdicts without recording them,
// so that it does not allocate; it counts verdict messages.
type discardSocket struct{ verdicts, batches int }

func (*discardSocket) Serve(context.Context, func([]queue.Packet), func(error)) error { return nil }
func (s *discardSocket) SetVerdict(uint32, int) error                                 { s.verdicts++; return nil }
func (s *discardSocket) SetVerdictWithMark(uint32, int, uint32) error                 { s.verdicts++; return nil }
func (s *discardSocket) SetVerdictBatch(uint32, int, uint32, bool) error {
	s.verdicts++
	s.batches++
	return nil
}
func (*discardSocket) Close() error { return nil }

// synBatch returns SYNs from client6 to each of dsts with ids from 1.
func synBatch(dsts ...uint16) []queue.Packet {
	pkts := make([]queue.Packet, len(dsts))
	for i, dst := range dsts {
		pkts[i] = queue.Packet{ID: uint32(i + 1), Data: packettest.TCPPacket(client6, 1, server6, dst, packet.TCPSyn)}
	}
	return pkts
}

func TestGateHandleAllocs(t *testing.T) {
	var d decideByPort
	g, err := queue.NewGate(queue.GateConfig{Decide: d.decide})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		give []queue.Packet
	}{
		{"accept", synBatch(2000)},
		{"drop", synBatch(2001)},
		{"reject", synBatch(2002)},
		{"mixed batch", synBatch(2000, 2000, 2001, 2002, 2002, 2000, 2001)},
		{"full batch", synBatch(make([]uint16, queue.MaxBatch)...)},
	} {
		var sock discardSocket
		if n := testing.AllocsPerRun(100, func() { queue.HandleGateBatch(g, &sock, tt.give) }); n != 0 {
			t.Errorf("%s: %v allocations per batch, want 0", tt.name, n)
		}
		if sock.verdicts == 0 {
			t.Errorf("%s: no verdicts given", tt.name)
		}
	}
}

func BenchmarkGateHandle(b *testing.B) {
	src := netip.MustParseAddr("198.18.0.2")
	g, err := queue.NewGate(queue.GateConfig{Decide: func(h *packet.Header) packet.Verdict {
		if h.Src == src {
			return packet.Accept
		}
		return packet.Reject
	}})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 16, queue.MaxBatch} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			var sock discardSocket
			pkts := make([]queue.Packet, n)
			for i := range pkts {
				pkts[i] = queue.Packet{ID: uint32(i + 1), Data: packettest.TCPPacket(client4, uint16(40000+i), server4, 2000, packet.TCPSyn)}
			}
			b.ReportAllocs()
			for b.Loop() {
				queue.HandleGateBatch(g, &sock, pkts)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/packet")
		})
	}
}

func TestGateBatchVerdicts(t *testing.T) {
	syn := func(id uint32, dst uint16) queue.Packet {
		return queue.Packet{ID: id, Data: packettest.TCPPacket(client4, uint16(40000+id), server4, dst, packet.TCPSyn)}
	}
	marked := func(p queue.Packet, mark uint32) queue.Packet { p.Mark = mark; return p }
	accept := func(id uint32, batch bool) queuetest.Verdict {
		return queuetest.Verdict{ID: id, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true, Batch: batch}
	}
	drop := func(id uint32, batch bool) queuetest.Verdict {
		return queuetest.Verdict{ID: id, Verdict: queue.NFDrop, Batch: batch}
	}
	reject := func(id, mark uint32, batch bool) queuetest.Verdict {
		return queuetest.Verdict{ID: id, Verdict: queue.NFRepeat, Mark: mark, WithMark: true, Batch: batch}
	}
	tests := []struct {
		name string
		give [][]queue.Packet // one receive batch each
		want []queuetest.Verdict
	}{
		{name: "one packet, plain verdict", give: [][]queue.Packet{{syn(1, 2000)}}, want: []queuetest.Verdict{accept(1, false)}},
		{name: "run of accepts, one batch verdict",
			give: [][]queue.Packet{{syn(1, 2000), syn(2, 2000), syn(3, 2000), syn(4, 2000), syn(5, 2000)}},
			want: []queuetest.Verdict{accept(5, true)}},
		{name: "run of drops, one batch verdict",
			give: [][]queue.Packet{{syn(7, 2001), syn(8, 2001), syn(9, 2001)}},
			want: []queuetest.Verdict{drop(9, true)}},
		{name: "mixed verdicts split into runs",
			give: [][]queue.Packet{{syn(1, 2000), syn(2, 2000), syn(3, 2001), syn(4, 2001), syn(5, 2001), syn(6, 2002), syn(7, 2002), syn(8, 2000)}},
			want: []queuetest.Verdict{accept(2, true), drop(5, true), reject(7, queue.DefaultRejectMark, true), accept(8, false)}},
		{name: "alternating verdicts, one each",
			give: [][]queue.Packet{{syn(1, 2000), syn(2, 2001), syn(3, 2000)}},
			want: []queuetest.Verdict{accept(1, false), drop(2, false), accept(3, false)}},
		{name: "rejects with different marks split",
			give: [][]queue.Packet{{syn(1, 2002), marked(syn(2, 2002), 0x100), marked(syn(3, 2002), 0x100)}},
			want: []queuetest.Verdict{reject(1, queue.DefaultRejectMark, false), reject(3, 0x100|queue.DefaultRejectMark, true)}},
		{name: "unknown and reject loops join a drop run",
			give: [][]queue.Packet{{syn(1, 2001), {ID: 2, Data: []byte{0x45}}, marked(syn(3, 2002), queue.DefaultRejectMark), syn(4, 2001)}},
			want: []queuetest.Verdict{drop(4, true)}},
		{name: "each receive answered on its own",
			give: [][]queue.Packet{{syn(1, 2000), syn(2, 2000)}, {syn(3, 2000), syn(4, 2000)}},
			want: []queuetest.Verdict{accept(2, true), accept(4, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d decideByPort
			_, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide})
			for _, batch := range tt.give {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := fake.InjectBatch(ctx, batch)
				cancel()
				if err != nil {
					t.Fatal(err)
				}
			}
			if diff := cmp.Diff(tt.want, fake.Verdicts()); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			if w := fake.Waiting(); len(w) != 0 {
				t.Errorf("packets %v still wait for a verdict", w)
			}
		})
	}
}

// TestGateBatchAfterRefusedVerdict checks that a packet whose drop the
// socket refused is never swept up by a batch accept: accepts go one by
// one until a drop batch has covered it.
func TestGateBatchAfterRefusedVerdict(t *testing.T) {
	var d decideByPort
	stats := new(queue.GateStats)
	_, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, Stats: stats})
	syn := func(id uint32, dst uint16) queue.Packet {
		return queue.Packet{ID: id, Data: packettest.TCPPacket(client4, uint16(40000+id), server4, dst, packet.TCPSyn)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fake.FailVerdicts(errors.New("netlink send failed"))
	if err := fake.InjectBatch(ctx, []queue.Packet{syn(1, 2001)}); err != nil {
		t.Fatal(err)
	}
	fake.FailVerdicts(nil)
	for _, batch := range [][]queue.Packet{
		{syn(2, 2000), syn(3, 2000)}, // accepted one by one: 1 still waits
		{syn(4, 2001)},               // a drop batch, even of one, settles 1
		{syn(5, 2000), syn(6, 2000)}, // batches again
	} {
		if err := fake.InjectBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	want := []queuetest.Verdict{
		{ID: 1, Verdict: queue.NFDrop},
		{ID: 2, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true}, {ID: 3, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
		{ID: 4, Verdict: queue.NFDrop, Batch: true},
		{ID: 6, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true, Batch: true},
	}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if v, ok := fake.Settled(1); !ok || v.Verdict != queue.NFDrop {
		t.Errorf("packet 1 settled by %+v (%v), want a drop", v, ok)
	}
	if w := fake.Waiting(); len(w) != 0 {
		t.Errorf("packets %v still wait for a verdict", w)
	}
	if n := stats.VerdictErrors.Load(); n != 1 {
		t.Errorf("VerdictErrors = %d, want 1", n)
	}
}

// A packet message that did not parse may leave a packet waiting in the
// kernel without a verdict; no batch accept may sweep it up afterwards.
func TestGateNoBatchAcceptAfterUnparsedPacket(t *testing.T) {
	for _, give := range []error{queue.ErrMalformed, queue.ErrNoPacketID, queue.ErrVerdictRefused} {
		t.Run(give.Error(), func(t *testing.T) {
			var d decideByPort
			_, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide})
			syn := func(id uint32, dst uint16) queue.Packet {
				return queue.Packet{ID: id, Data: packettest.TCPPacket(client4, uint16(40000+id), server4, dst, packet.TCPSyn)}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := fake.InjectError(ctx, fmt.Errorf("receive: %w", give)); err != nil {
				t.Fatal(err)
			}
			if err := fake.InjectBatch(ctx, []queue.Packet{syn(2, 2000), syn(3, 2000)}); err != nil {
				t.Fatal(err)
			}
			for _, v := range fake.Verdicts() {
				if v.Batch && (v.Verdict == queue.NFAccept || v.Mark&queue.DefaultAcceptMark != 0) {
					t.Fatalf("batch accept %+v after %v", v, give)
				}
			}
		})
	}
}

// TestGateGrantInPlace: while GrantInPlace says so, a batch's grants are
// plain NF_ACCEPTs (batched, counted in AcceptedInPlace) and refusals
// still repeat with their bit; it is asked once per received batch that
// holds a grant, and a batch it says no to repeats its grants again.
func TestGateGrantInPlace(t *testing.T) {
	syn := func(id uint32, dst uint16) queue.Packet {
		return queue.Packet{ID: id, Data: packettest.TCPPacket(client4, uint16(40000+id), server4, dst, packet.TCPSyn)}
	}
	var d decideByPort
	var asked atomic.Int32
	inPlace := atomic.Bool{}
	inPlace.Store(true)
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, GrantInPlace: func() bool {
		asked.Add(1)
		return inPlace.Load()
	}})
	for i, batch := range [][]queue.Packet{
		{syn(1, 2000), syn(2, 2000), syn(3, 2002), syn(4, 2000)},
		{syn(6, 2001), syn(7, 2002)}, // no grant: not asked
		{syn(5, 2000)},
	} {
		if i == 2 {
			inPlace.Store(false)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := fake.InjectBatch(ctx, batch)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	want := []queuetest.Verdict{
		{ID: 2, Verdict: queue.NFAccept, Batch: true},
		{ID: 3, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true},
		{ID: 4, Verdict: queue.NFAccept},
		{ID: 6, Verdict: queue.NFDrop},
		{ID: 7, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true},
		{ID: 5, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
	}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("GrantInPlace asked %d times, want once per batch with a grant (2)", n)
	}
	if n := g.Stats().AcceptedInPlace.Load(); n != 3 {
		t.Errorf("AcceptedInPlace = %d, want 3", n)
	}
}
