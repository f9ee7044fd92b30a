package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"sknock/packet"
)

// DefaultHoldMaxQueueLen is how many packets the kernel keeps waiting in
// the hold queue; more are dropped by the kernel (fail closed). It matches
// gate.DefaultMaxHeld, so that every waiting packet fits the gate's table.
const DefaultHoldMaxQueueLen = 64

// HoldConfig configures a HoldReader.
type HoldConfig struct {
	// Queue is the hold queue's number: where the gate reader moves the
	// packets it defers (GateConfig.HoldQueue).
	Queue uint16
	// Deliver is given every packet of the hold queue, with its decoded
	// header, on the receive goroutine; its owner settles it later with
	// Settle. h is valid only until Deliver returns. Required.
	Deliver func(ctx context.Context, p *Packet, h *packet.Header)
	// RejectMark and AcceptMark are the signal bits of Reject and Accept,
	// as in GateConfig; zero: their defaults.
	RejectMark, AcceptMark uint32
	// Repeats is the gate readers' (GateConfig.Repeats): a packet this
	// reader repeats that comes back to the gate queue without its signal
	// is then answered there without another repeat. Nil: its own.
	Repeats *Repeats
	// MaxQueueLen is the kernel's queue bound; zero:
	// DefaultHoldMaxQueueLen.
	MaxQueueLen uint32
	// CopyRange, ReadBuffer, NetNS and Open are as in GateConfig.
	CopyRange  uint32
	ReadBuffer int
	NetNS      int
	Open       Opener
	// Stats receives the reader's counters; nil: the reader keeps its own.
	Stats *GateStats
}

// HoldReader serves the hold queue: it hands every packet to Deliver and
// gives each the verdict its owner passes to Settle, one message per
// packet (never a batch: each is settled on its own time). It knows
// nothing of why packets wait.
type HoldReader struct {
	cfg     HoldConfig
	stats   *GateStats
	running atomic.Bool
	hdr     packet.Header // the receive goroutine's
	sock    lockedSocket

	// held keeps the hash of each packet delivered, by id, until Settle
	// repeats it (see rememberHeld); a later packet with the same slot
	// takes its place.
	heldMu sync.Mutex
	held   [heldSlots]heldPacket
}

// heldSlots is the size of HoldReader.held: a power of two, at least
// DefaultHoldMaxQueueLen.
const heldSlots = 256

// heldPacket is one delivered packet's id and hash.
type heldPacket struct {
	id   uint32
	hash uint64
}

// noteHeld keeps p's hash for Settle.
func (r *HoldReader) noteHeld(p *Packet) {
	h := r.cfg.Repeats.hash(p.Data)
	r.heldMu.Lock()
	r.held[p.ID&(heldSlots-1)] = heldPacket{id: p.ID, hash: h}
	r.heldMu.Unlock()
}

// rememberHeld tells Repeats that the packet with id is being repeated,
// when its hash is still known.
func (r *HoldReader) rememberHeld(id uint32) {
	r.heldMu.Lock()
	hp := r.held[id&(heldSlots-1)]
	r.heldMu.Unlock()
	if hp.id == id && hp.hash != 0 {
		r.cfg.Repeats.remember(hp.hash)
	}
}

// lockedSocket is the socket Settle writes to, set while Run runs.
type lockedSocket struct {
	mu   sync.Mutex
	sock Socket
}

// ErrNotRunning is Settle's error while Run is not serving the queue: the
// kernel drops the queue's packets when it is unbound.
var ErrNotRunning = errors.New("queue: reader not running")

// NewHold checks cfg, fills in its defaults and returns a reader that Run
// starts.
func NewHold(cfg HoldConfig) (*HoldReader, error) {
	if cfg.Deliver == nil {
		return nil, errors.New("queue: hold config: Deliver is nil")
	}
	sig := signalsOf(cfg.RejectMark, cfg.AcceptMark)
	cfg.RejectMark, cfg.AcceptMark = sig.reject, sig.accept
	if cfg.Repeats == nil {
		cfg.Repeats = NewRepeats(nil)
	}
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = DefaultHoldMaxQueueLen
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
	return &HoldReader{cfg: cfg, stats: cfg.Stats}, nil
}

// Stats returns the reader's counters: Packets counts every packet
// received, and Accepted, Dropped and Rejected count the verdicts Settle
// gave.
func (r *HoldReader) Stats() *GateStats { return r.stats }

// Run binds the hold queue and serves it until ctx is done, then unbinds;
// the kernel drops the packets still waiting. It returns nil after a clean
// shutdown, or an error naming the queue.
func (r *HoldReader) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	sock, err := r.cfg.Open(SocketConfig{
		Queue:       r.cfg.Queue,
		CopyRange:   r.cfg.CopyRange,
		MaxQueueLen: r.cfg.MaxQueueLen,
		ReadBuffer:  r.cfg.ReadBuffer,
		NetNS:       r.cfg.NetNS,
	})
	if err != nil {
		return fmt.Errorf("hold: %w", err)
	}
	r.sock.mu.Lock()
	r.sock.sock = sock
	r.sock.mu.Unlock()
	defer func() {
		r.sock.mu.Lock()
		r.sock.sock = nil
		r.sock.mu.Unlock()
	}()
	return serve(ctx, sock, func(pkts []Packet) { r.handle(ctx, pkts) }, func(err error) {
		countReceiveError(err, &r.stats.ReceiveErrors, &r.stats.Overruns)
	})
}

// handle delivers every packet of one receive.
func (r *HoldReader) handle(ctx context.Context, pkts []Packet) {
	for i := range pkts {
		r.stats.Packets.Add(1)
		r.hdr.Decode(pkts[i].Data)
		r.noteHeld(&pkts[i])
		r.cfg.Deliver(ctx, &pkts[i], &r.hdr)
	}
}

// Settle gives the packet with id and mark its verdict (Defer drops). The
// owner of the held packets calls it, from one goroutine.
func (r *HoldReader) Settle(id, mark uint32, v packet.Verdict) error {
	p := Packet{ID: id, Mark: mark}
	kv, loop := kernelVerdictOf(&p, v, signalsOf(r.cfg.RejectMark, r.cfg.AcceptMark), NFDrop)
	r.sock.mu.Lock()
	defer r.sock.mu.Unlock()
	if r.sock.sock == nil {
		return ErrNotRunning
	}
	if kv.verdict == NFRepeat {
		// A packet stripped of its signal comes back to the gate
		// queue, whose reader then answers it without a repeat.
		r.rememberHeld(id)
	}
	countVerdict(r.stats, v, loop, false, kv)
	var err error
	if kv.withMark {
		err = r.sock.sock.SetVerdictWithMark(id, kv.verdict, kv.mark)
	} else {
		err = r.sock.sock.SetVerdict(id, kv.verdict)
	}
	if err != nil {
		r.stats.VerdictErrors.Add(1)
		return err
	}
	r.stats.VerdictMessages.Add(1)
	return nil
}
