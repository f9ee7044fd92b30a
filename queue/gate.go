package queue

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
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
	// VerdictErrors counts verdicts the socket refused; the kernel keeps
	// such packets until the queue closes, then drops them.
	VerdictErrors atomic.Uint64
}

// GateReader serves the gate queue: every packet is decoded into one
// reused Header, given to Decide and answered inline. Nothing on its side
// allocates per packet.
type GateReader struct {
	cfg     GateConfig
	stats   *GateStats
	running atomic.Bool

	// sock and hdr belong to the one receive goroutine while Run runs.
	sock Socket
	hdr  Header
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
	return &GateReader{cfg: cfg, stats: cfg.Stats}, nil
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
	return serve(ctx, sock, g.handle, func(err error) { countReceiveError(err, &g.stats.ReceiveErrors, &g.stats.Overruns) })
}

// handle is the per-packet path: decode, decide, verdict. It runs on the
// socket's single receive goroutine.
//
// TODO(batch): consecutive packets with the same verdict could share one
// NFQNL_MSG_VERDICT_BATCH (it covers every id up to the given one), but
// that needs the verdict deferred until the socket's read buffer is
// drained, which go-nfqueue's callback API does not tell us; one verdict
// per packet for now.
func (g *GateReader) handle(p Packet) {
	st := g.stats
	st.Packets.Add(1)
	g.hdr.Decode(p.Data)
	v := Drop
	if g.hdr.Proto == 0 {
		st.Unknown.Add(1)
	} else {
		v = g.cfg.Decide(&g.hdr)
	}
	loop, err := setVerdict(g.sock, p, v, g.cfg.RejectMark)
	if err != nil {
		st.VerdictErrors.Add(1)
	}
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
}

// serve runs sock until ctx is done and closes it. The context Serve sees
// is cancelled before Close, so go-nfqueue's receive goroutine leaves its
// loop before its socket is closed under it.
func serve(ctx context.Context, sock Socket, handle func(Packet), onError func(error)) error {
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
