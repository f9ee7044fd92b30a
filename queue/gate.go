package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
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
	Decide func(h *Header) Verdict
	// RejectMark is the mark bit ORed into a rejected packet's mark before
	// it is repeated; the static rules REJECT packets carrying it. Zero:
	// DefaultRejectMark.
	RejectMark uint32
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
	// Stats receives the reader's counters; nil: the reader keeps its own.
	Stats *GateStats
	// Open binds the queue; nil: OpenNFQueue.
	Open Opener

	// Hold, when set, is asked before Decide whether to hold a packet
	// instead of deciding it now: one that Decide would not accept yet but
	// soon may, a SYN from a source whose knock is being decided. A held
	// packet gets no verdict until Release names its source or HoldTimeout
	// passes; then Decide decides it. At most MaxHeld packets are held;
	// beyond that Decide decides at once. While any packet is held,
	// verdicts go out one per packet, because a batch verdict would settle
	// the held ones too. Hold runs like Decide, and also under the hold
	// list's lock, so it must be as quick. With Hold set, Decide is also
	// called by whoever settles held packets (Release's caller, a timer),
	// so both must be safe for concurrent use. Nil: nothing is held.
	Hold func(h *Header) bool
	// MaxHeld bounds the packets held at once; zero: DefaultMaxHeld.
	MaxHeld int
	// HoldTimeout is the longest a packet is held; zero:
	// DefaultHoldTimeout.
	HoldTimeout time.Duration
	// Clock gives the time for hold deadlines; nil: time.Now.
	Clock func() time.Time
}

// GateStats are a GateReader's counters. Every packet counts once in
// Packets and once in exactly one of Accepted, Dropped and Rejected.
type GateStats struct {
	// Packets is every packet received with an id.
	Packets atomic.Uint64
	// Accepted, Dropped and Rejected count the verdicts given.
	Accepted, Dropped, Rejected atomic.Uint64
	// Unknown counts packets that did not decode as TCP or UDP over IP;
	// they are dropped (and counted in Dropped too).
	Unknown atomic.Uint64
	// RejectLoops counts packets to reject that already carried the reject
	// mark: the REJECT rule is missing, so they are dropped instead (and
	// counted in Dropped, not Rejected).
	RejectLoops atomic.Uint64
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
	// Held counts packets held for a knock's decision (see
	// GateConfig.Hold); HoldTimeouts those decided because the hold timed
	// out rather than being released. A held packet counts in Packets and
	// its verdict once it is decided; one still held when Run ends is
	// dropped by the kernel and counts in neither.
	Held, HoldTimeouts atomic.Uint64
}

// GateReader serves the gate queue: every packet is decoded into one
// reused Header and given to Decide, inline, in the kernel's order; the
// packets of one receive are then answered together, one batch verdict
// per run of equal verdicts, or one verdict per packet while a packet is
// held (GateConfig.Hold). Nothing on its side allocates per packet.
type GateReader struct {
	cfg     GateConfig
	stats   *GateStats
	running atomic.Bool

	// sock and hdr belong to the one receive goroutine while Run runs;
	// sock is also read, under held.mu, by whoever settles held packets.
	// unsettled reports that a verdict the socket refused left a packet
	// waiting in the kernel (see answer).
	sock      Socket
	hdr       Header
	unsettled atomic.Bool
	held      holdList
}

// NewGate checks cfg, fills in its defaults and returns a reader that Run
// starts.
func NewGate(cfg GateConfig) (*GateReader, error) {
	if cfg.Decide == nil {
		return nil, errors.New("queue: gate config: Decide is nil")
	}
	if cfg.RejectMark == 0 {
		cfg.RejectMark = DefaultRejectMark
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
	if cfg.MaxHeld < 0 || cfg.HoldTimeout < 0 {
		return nil, errors.New("queue: gate config: MaxHeld and HoldTimeout must not be negative")
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.HoldTimeout == 0 {
		cfg.HoldTimeout = DefaultHoldTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	g := &GateReader{cfg: cfg, stats: cfg.Stats}
	if cfg.Hold != nil {
		g.held.init(g, cfg.MaxHeld)
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
	g.held.mu.Lock()
	g.sock = sock
	g.held.mu.Unlock()
	defer g.held.forget()
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
// Every packet of the batch has its verdict when handle returns, or is
// held (and then no batch verdict goes out until it is settled), so that a
// batch verdict, which covers every waiting packet up to its id, never
// covers one that was not decided.
func (g *GateReader) handle(pkts []Packet) {
	start, inRun := 0, false
	var run kernelVerdict
	for i := range pkts {
		kv, held := g.decide(&pkts[i])
		if held || (inRun && kv != run) {
			if inRun {
				g.answer(pkts[start:i], run)
			}
			inRun = false
		}
		if !held && !inRun {
			start, run, inRun = i, kv, true
		}
	}
	if inRun {
		g.answer(pkts[start:], run)
	}
}

// decide decodes p and either holds it (held true) or asks Decide, counts
// the verdict and returns what the kernel is to be told.
func (g *GateReader) decide(p *Packet) (kv kernelVerdict, held bool) {
	g.hdr.Decode(p.Data)
	if g.cfg.Hold != nil && g.hdr.Proto != 0 && g.cfg.Hold(&g.hdr) && g.held.add(p, &g.hdr) {
		g.stats.Held.Add(1)
		return kernelVerdict{}, true
	}
	return g.verdictFor(p, &g.hdr), false
}

// verdictFor asks Decide about p, whose decoded header is h, counts the
// verdict and returns what the kernel is to be told.
func (g *GateReader) verdictFor(p *Packet, h *Header) kernelVerdict {
	st := g.stats
	st.Packets.Add(1)
	v := Drop
	if h.Proto == 0 {
		st.Unknown.Add(1)
	} else {
		v = g.cfg.Decide(h)
	}
	kv, loop := kernelVerdictOf(p, v, g.cfg.RejectMark)
	switch {
	case loop:
		st.RejectLoops.Add(1)
		st.Dropped.Add(1)
	case v == Accept:
		st.Accepted.Add(1)
	case v == Reject:
		st.Rejected.Add(1)
	default:
		st.Dropped.Add(1)
	}
	return kv
}

// answer gives run, packets in a row that all get kv, their verdict: one
// batch verdict for the last id, or a plain verdict for a run of one, or
// plain verdicts for all while packets are held.
//
// A verdict the socket refused leaves its packet waiting in the kernel
// (unsettled), where the next batch verdict would sweep it up. A drop or
// reject sweeping it fails closed, so those go out as batches, even runs
// of one, and settle it; accepts go out one by one until then, so that no
// packet is ever accepted that Decide did not accept.
func (g *GateReader) answer(run []Packet, kv kernelVerdict) {
	last := run[len(run)-1].ID
	switch {
	case g.held.n.Load() > 0 || (kv.verdict == NFAccept && g.unsettled.Load()):
		for i := range run {
			g.send(run[i].ID, kv, false)
		}
	case len(run) == 1 && !g.unsettled.Load():
		g.send(last, kv, false)
	default:
		if g.send(last, kv, true) && kv.verdict != NFAccept {
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
