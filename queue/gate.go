package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"sknock/packet"
)

// Defaults of GateConfig's zero fields.
const (
	// DefaultGateMaxQueueLen is how many packets the kernel holds for the
	// gate before it drops new ones.
	DefaultGateMaxQueueLen = 4096
	// DefaultGateCopyRange covers an IPv4 header with options and a TCP
	// header with options (120 bytes), or an IPv6 header, a few extension
	// headers and a TCP header. A packet whose transport header lies beyond
	// it decodes as unknown and is dropped.
	DefaultGateCopyRange = 256
	// DefaultReadBuffer is the socket receive buffer of both readers: room
	// for bursts while a verdict or a worker hand-off is under way.
	DefaultReadBuffer = 8 << 20
)

// GateConfig configures a GateReader.
type GateConfig struct {
	// Queue is the gate's NFQUEUE number.
	Queue uint16
	// Decide gives the verdict for a packet whose header decoded (Family
	// and Proto non-zero); unknown packets are dropped without asking it.
	// It runs inline on the receive goroutine, one packet at a time, so it
	// must be quick and must not block; h and h.Payload are valid only
	// until it returns. Required.
	Decide func(h *packet.Header) packet.Verdict
	// HoldQueue, with Holding set, is where Defer verdicts send their
	// packets (NF_QUEUE): they leave the gate queue at once, in the same
	// batch verdicts as the rest, and a HoldReader on that queue keeps
	// them until they are settled. Without Holding, Defer drops.
	HoldQueue uint16
	// Holding enables HoldQueue.
	Holding bool
	// RejectMark is the signal bit ORed into a refused packet's mark before
	// it is repeated (NF_REPEAT); the rules' first rules clear it and have
	// the packet refused. Zero: DefaultRejectMark.
	RejectMark uint32
	// AcceptMark is the signal bit ORed into a granted packet's mark
	// before it is repeated; the rules' first rule clears it and lets the
	// packet on through the rest of the host's rules. Zero:
	// DefaultAcceptMark.
	AcceptMark uint32
	// Repeats remembers repeated packets, to answer one that comes back
	// without a repeat (see Repeats); share one among the gate and hold
	// readers. Nil: the reader keeps its own.
	Repeats *Repeats
	// MaxQueueLen is the kernel's queue bound; zero: DefaultGateMaxQueueLen.
	MaxQueueLen uint32
	// CopyRange is how many bytes of each packet are copied to us; zero:
	// DefaultGateCopyRange.
	CopyRange uint32
	// ReadBuffer is the socket receive buffer in bytes; zero:
	// DefaultReadBuffer; negative: the system default.
	ReadBuffer int
	// NetNS is a file descriptor of the network namespace to bind in;
	// zero: the caller's.
	NetNS int
	// GrantInPlace, when set, is asked at the first grant of each batch
	// of packets received, after they arrived: true lets the reader
	// answer the batch's grants with a plain NF_ACCEPT instead of
	// repeating them with the grant bit, because nothing after the
	// gate's jump in its chain would see the repeat
	// (rules.Keeper.GrantPassGeneration, against the ruleset generation
	// read then). nil: grants always repeat.
	GrantInPlace func() bool
	// Stats receives the reader's counters; nil: the reader keeps its own.
	Stats *GateStats
	// Open binds the queue; nil: OpenNFQueue.
	Open Opener
}

// GateStats are a GateReader's counters. Every packet counts once in
// Packets and once in exactly one of Accepted, Dropped, Rejected and
// Deferred.
type GateStats struct {
	// Packets is every packet received with an id.
	Packets atomic.Uint64
	// Accepted, Dropped and Rejected count the verdicts given; Deferred
	// counts packets moved to the hold queue.
	Accepted, Dropped, Rejected, Deferred atomic.Uint64
	// AcceptedInPlace counts the grants among Accepted answered with a
	// plain NF_ACCEPT (GateConfig.GrantInPlace), not repeated.
	AcceptedInPlace atomic.Uint64
	// Unknown counts packets that did not decode as TCP or UDP over IP;
	// they are dropped (and counted in Dropped too).
	Unknown atomic.Uint64
	// RejectLoops counts packets to reject that already carried the reject
	// mark: the REJECT rule is missing, so they are dropped instead (and
	// counted in Dropped, not Rejected).
	RejectLoops atomic.Uint64
	// RepeatLoops counts packets that came back right after the reader
	// repeated them, without the signal bit: a rule above the gate's jump
	// rewrites the mark. They were answered without a repeat (a grant
	// accepted, a refusal dropped) and counted as such too.
	RepeatLoops atomic.Uint64
	// ReceiveErrors counts receive errors the reader survived, ENOBUFS
	// included.
	ReceiveErrors atomic.Uint64
	// Overruns counts ENOBUFS: the receive buffer overflowed and the kernel
	// dropped packets. With NETLINK_NO_ENOBUFS (OpenNFQueue sets it) it
	// stays zero; see ReadKernelStats.
	Overruns atomic.Uint64
	// VerdictErrors counts verdict messages the socket refused (a batch
	// verdict counts once); the kernel keeps such packets until a later
	// drop or reject batch covers them or the queue closes, and drops them.
	VerdictErrors atomic.Uint64
	// VerdictMessages counts verdict messages the socket took. Batch
	// verdicts make it smaller than Packets under load: one message
	// answers a run of packets with the same verdict.
	VerdictMessages atomic.Uint64
}

// GateReader serves the gate queue: every packet is decoded into one
// reused Header and given to Decide, inline, in the kernel's order; the
// packets of one receive are then answered together, one batch verdict
// per run of equal verdicts (deferred packets included: they are moved to
// the hold queue). Every verdict of the gate queue goes out from its one
// receive goroutine. Nothing on its side allocates per packet.
type GateReader struct {
	cfg     GateConfig
	stats   *GateStats
	running atomic.Bool
	deferTo int     // the kernel verdict for Defer
	sig     signals // the signal bits of repeats

	// sock and hdr belong to the one receive goroutine while Run runs.
	// unsettled reports that a verdict the socket refused left a packet
	// waiting in the kernel (see answer).
	sock      Socket
	hdr       packet.Header
	unsettled atomic.Bool
	// inPlace is GrantInPlace's answer for the batch being decided,
	// asked at its first grant (asked): a batch without grants costs no
	// round trip.
	inPlace, asked bool
}

// NewGate checks cfg, fills in its defaults and returns a reader that Run
// starts.
func NewGate(cfg GateConfig) (*GateReader, error) {
	if cfg.Decide == nil {
		return nil, errors.New("queue: gate config: Decide is nil")
	}
	sig := signalsOf(cfg.RejectMark, cfg.AcceptMark)
	cfg.RejectMark, cfg.AcceptMark = sig.reject, sig.accept
	if sig.reject&sig.accept != 0 {
		return nil, fmt.Errorf("queue: gate config: RejectMark %#x and AcceptMark %#x share a bit", sig.reject, sig.accept)
	}
	if cfg.Repeats == nil {
		cfg.Repeats = NewRepeats(nil)
	}
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = DefaultGateMaxQueueLen
	}
	if cfg.CopyRange == 0 {
		cfg.CopyRange = DefaultGateCopyRange
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	if cfg.Stats == nil {
		cfg.Stats = new(GateStats)
	}
	if cfg.Open == nil {
		cfg.Open = OpenNFQueue
	}
	if cfg.Holding && cfg.HoldQueue == cfg.Queue {
		return nil, fmt.Errorf("queue: gate config: HoldQueue %d is the gate queue", cfg.Queue)
	}
	g := &GateReader{cfg: cfg, stats: cfg.Stats, deferTo: NFDrop, sig: sig}
	if cfg.Holding {
		g.deferTo = QueueTo(cfg.HoldQueue)
	}
	return g, nil
}

// Stats returns the reader's counters.
func (g *GateReader) Stats() *GateStats { return g.stats }

// Run binds the gate queue and serves it until ctx is done, then unbinds.
// It returns nil after a clean shutdown, or an error naming the queue when
// binding failed or the socket broke. While Run is not running the gate
// queue has no listener and the kernel drops its packets (no bypass).
func (g *GateReader) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer g.running.Store(false)
	sock, err := g.cfg.Open(SocketConfig{
		Queue:       g.cfg.Queue,
		CopyRange:   g.cfg.CopyRange,
		MaxQueueLen: g.cfg.MaxQueueLen,
		ReadBuffer:  g.cfg.ReadBuffer,
		NetNS:       g.cfg.NetNS,
	})
	if err != nil {
		return fmt.Errorf("gate: %w", err)
	}
	g.sock = sock
	return serve(ctx, sock, g.handle, g.receiveError)
}

// receiveError counts err. An error that may have left a packet waiting
// without a verdict (one that did not parse, or a verdict the kernel
// refused after the write succeeded) marks the queue unsettled, so no
// batch accept can sweep that packet up. It runs on the receive goroutine.
func (g *GateReader) receiveError(err error) {
	countReceiveError(err, &g.stats.ReceiveErrors, &g.stats.Overruns)
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrNoPacketID) || errors.Is(err, ErrVerdictRefused) {
		g.unsettled.Store(true)
	}
}

// handle is the receive goroutine's path for one batch of packets: it
// decides every packet in order, then answers each run of packets in a row
// that get the same kernel verdict (and mark) with one batch verdict.
// Every packet of the batch has its verdict when handle returns, so a
// batch verdict, which covers every waiting packet up to its id, never
// covers one that was not decided.
func (g *GateReader) handle(pkts []Packet) {
	g.asked = false
	start := 0
	var run kernelVerdict
	for i := range pkts {
		kv := g.decide(&pkts[i])
		if i > 0 && kv != run {
			g.answer(pkts[start:i], run)
			start = i
		}
		run = kv
	}
	if len(pkts) > 0 {
		g.answer(pkts[start:], run)
	}
}

// decide decodes p, asks Decide, counts the verdict and returns what the
// kernel is to be told.
func (g *GateReader) decide(p *Packet) kernelVerdict {
	g.hdr.Decode(p.Data)
	st := g.stats
	st.Packets.Add(1)
	v := packet.Drop
	if g.hdr.Proto == 0 {
		st.Unknown.Add(1)
	} else {
		v = g.cfg.Decide(&g.hdr)
	}
	kv, loop := kernelVerdictOf(p, v, g.sig, g.deferTo)
	if kv.verdict == NFRepeat && !kv.refuses && g.cfg.GrantInPlace != nil {
		if !g.asked {
			g.inPlace, g.asked = g.cfg.GrantInPlace(), true
		}
		if g.inPlace {
			// Nothing after the jump would see the repeat: accept here.
			st.AcceptedInPlace.Add(1)
			kv = kernelVerdict{verdict: NFAccept}
		}
	}
	kv, again := g.cfg.Repeats.settle(p, kv)
	countVerdict(st, v, loop, again, kv)
	return kv
}

// countVerdict counts v, whose kernel verdict is kv, in st. loop: the
// packet carried the signal bit already; again: it came back from a
// repeat without it.
func countVerdict(st *GateStats, v packet.Verdict, loop, again bool, kv kernelVerdict) {
	if again {
		st.RepeatLoops.Add(1)
	}
	switch {
	case loop && v == packet.Reject:
		st.RejectLoops.Add(1)
		st.Dropped.Add(1)
	case v == packet.Accept:
		st.Accepted.Add(1)
	case v == packet.Reject && kv.verdict == NFDrop:
		st.Dropped.Add(1)
	case v == packet.Reject:
		st.Rejected.Add(1)
	case v == packet.Defer && kv.verdict != NFDrop:
		st.Deferred.Add(1)
	default:
		st.Dropped.Add(1)
	}
}

// answer gives run, packets in a row that all get kv, their verdict: one
// batch verdict for the last id, or a plain verdict for a run of one.
//
// A verdict the socket refused leaves its packet waiting in the kernel
// (unsettled), where the next batch verdict would sweep it up. A drop or
// refusal sweeping it fails closed, so those go out as batches, even runs
// of one, and settle it; grants (accepts, and repeats with the grant bit)
// go out one by one until then, so that no packet is ever accepted that
// Decide did not accept.
func (g *GateReader) answer(run []Packet, kv kernelVerdict) {
	last := run[len(run)-1].ID
	switch {
	case !kv.failsClosed() && g.unsettled.Load():
		for i := range run {
			g.send(run[i].ID, kv, false)
		}
	case len(run) == 1 && !g.unsettled.Load():
		g.send(last, kv, false)
	default:
		if g.send(last, kv, true) && kv.failsClosed() {
			g.unsettled.Store(false)
		}
	}
}

// send passes one verdict message to the socket and counts a refusal.
func (g *GateReader) send(id uint32, kv kernelVerdict, batch bool) bool {
	var err error
	switch {
	case batch:
		err = g.sock.SetVerdictBatch(id, kv.verdict, kv.mark, kv.withMark)
	case kv.withMark:
		err = g.sock.SetVerdictWithMark(id, kv.verdict, kv.mark)
	default:
		err = g.sock.SetVerdict(id, kv.verdict)
	}
	if err != nil {
		g.stats.VerdictErrors.Add(1)
		g.unsettled.Store(true)
		return false
	}
	g.stats.VerdictMessages.Add(1)
	return true
}

// serve runs sock until ctx is done and closes it. The context Serve sees
// is cancelled before Close, so the receive loop has left before its
// socket is closed under it.
func serve(ctx context.Context, sock Socket, handle func([]Packet), onError func(error)) error {
	ctx, cancel := context.WithCancel(ctx)
	serveErr := sock.Serve(ctx, handle, onError)
	cancel()
	closeErr := sock.Close()
	if serveErr != nil {
		return serveErr
	}
	return closeErr
}

// countReceiveError counts err in all, and in overruns when it is ENOBUFS.
func countReceiveError(err error, all, overruns *atomic.Uint64) {
	all.Add(1)
	if isENOBUFS(err) {
		overruns.Add(1)
	}
}
