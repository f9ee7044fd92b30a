package queue

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"sknock/packet"
	"sync"
	"sync/atomic"
)

// Defaults of KnockConfig's zero fields.
const (
	// DefaultKnockCopyRange is how many bytes of a knock packet, IP header
	// included, are copied to us. sKnock knocks are at most about 1200
	// bytes; 4096 leaves room for larger certificates while keeping the
	// buffer pool small. A larger packet is counted as Truncated and
	// dropped without being handed on.
	DefaultKnockCopyRange = 4096
	// DefaultKnockDepth bounds the channel from the receive goroutine to
	// the workers.
	DefaultKnockDepth = 1024
	// DefaultKnockMaxQueueLen is how many knocks the kernel holds for us
	// until the receive goroutine reads them (each is answered at once
	// after): 8192 absorbs 200 ms without the CPU at 40,000 knocks a
	// second, where 1024 lost knocks to a spoofed flood (issue 12, item 2).
	DefaultKnockMaxQueueLen = 8192
)

// KnockConfig configures a KnockReader.
type KnockConfig struct {
	// Queue is the knock NFQUEUE number.
	Queue uint16
	// Handle is given the source address and UDP payload of every knock,
	// on one of the workers. The payload is a pooled buffer, reused once
	// Handle returns: Handle must not retain it. Required.
	Handle func(src netip.Addr, payload []byte)
	// Workers is how many goroutines run Handle; zero: runtime.NumCPU().
	Workers int
	// Depth bounds the knocks waiting for a worker; when it is reached,
	// new knocks are shed (dropped and counted). Zero: DefaultKnockDepth.
	Depth int
	// CopyRange is how many bytes of each packet are copied to us; zero:
	// DefaultKnockCopyRange.
	CopyRange uint32
	// MaxQueueLen is the kernel's queue bound; zero:
	// DefaultKnockMaxQueueLen.
	MaxQueueLen uint32
	// ReadBuffer is the socket receive buffer in bytes; zero:
	// DefaultReadBuffer; negative: the system default.
	ReadBuffer int
	// NetNS is a file descriptor of the network namespace to bind in;
	// zero: the caller's.
	NetNS int
	// Stats receives the reader's counters; nil: the reader keeps its own.
	Stats *KnockStats
	// Open binds the queue; nil: OpenNFQueue.
	Open Opener
	// Queued, when set, is called on the receive goroutine with the source
	// of every knock about to be handed to a worker, before any worker can
	// run Handle for it. Each call is followed by Handle for that knock,
	// or by Unhandled when it is left undone at the end of Run.
	// sknockd uses the pair to hold gate packets that race their knock.
	Queued func(src netip.Addr)
	// Unhandled undoes Queued for a knock Handle will not see (left in the
	// backlog when Run stops); required with Queued. Shed knocks are shed
	// before Queued.
	Unhandled func(src netip.Addr)
	// Priority, when set, is asked on the receive goroutine for every
	// knock's source; it must be quick and not allocate. Knocks from
	// sources it names (sknockd: those that earned a grant recently) wait
	// in a lane of their own, PriorityDepth long, which the workers empty
	// first, so that a flood filling the backlog sheds them last. A
	// priority knock finding its lane full takes the common one.
	Priority func(src netip.Addr) bool
	// PriorityDepth bounds each priority lane; zero: Depth/4 (at least
	// 1).
	PriorityDepth int
	// Classify, when set, is asked on the receive goroutine for every
	// knock's payload (a pooled copy) how it is served; it must be quick
	// and not allocate. atOnce: the knock is cheap to decide (sknockd: a
	// datagram that is no knock, a v2 knock whose mac1 is wrong, a
	// version the configuration refuses), so the receive goroutine runs
	// Queued and Handle for it at once and no flood of such datagrams
	// can take a worker or a place in a lane. fast: the knock waits in
	// the fast lane (sknockd: v2 with the right mac1), which the workers
	// empty before the common lane (v1), so that knocks that cost an ECDH
	// to anyone never delay fast ones. Priority splits both lanes alike:
	// the workers take a priority fast knock first, then a fast one, then
	// a priority common one, then a common one. Nil: every knock is
	// common.
	Classify func(payload []byte) (atOnce, fast bool)
	// FastDepth bounds the fast lane; zero: Depth. Used with Classify.
	FastDepth int
	// AtOnce, when set, runs instead of Handle for the knocks Classify
	// says to decide at once (sknockd: Engine.KnockAtOnce, which spares
	// Classify's mac1 check a second time); same contract as Handle.
	// Nil: Handle.
	AtOnce func(src netip.Addr, payload []byte)
	// Reject is how the reader starts answering knocks (SetReject changes
	// it while running): true, as the kernel answers a closed port, by
	// repeating each packet with RejectMark set, which the rules' mark
	// rule rejects (ICMP port unreachable); false (the zero value),
	// silently, by dropping it. Either way every packet is answered alike,
	// valid knock or not, once its payload is copied.
	Reject bool
	// RejectMark is the mark bit ORed into a rejected knock's mark; zero:
	// DefaultRejectMark. It must be the rules' reject mark.
	RejectMark uint32
}

// KnockStats are a KnockReader's counters. Every packet counts in
// Received, and then in exactly one of Queued, Shed, Unknown and Truncated.
type KnockStats struct {
	// Received is every packet received with an id; all are dropped, or
	// with SetReject(true) rejected as on a closed port.
	Received atomic.Uint64
	// Queued counts knocks handed to the workers.
	Queued atomic.Uint64
	// Shed counts knocks dropped because the workers were Depth behind.
	Shed atomic.Uint64
	// Prioritized counts knocks queued in a priority lane (also counted
	// in Queued).
	Prioritized atomic.Uint64
	// Fast counts knocks queued in the fast lane or its priority lane
	// (also counted in Queued).
	Fast atomic.Uint64
	// AtOnce counts knocks Classify sent to Handle on the receive
	// goroutine (also counted in Queued and Handled).
	AtOnce atomic.Uint64
	// Unknown counts packets that were not UDP over IP.
	Unknown atomic.Uint64
	// Truncated counts knocks longer than the copy range.
	Truncated atomic.Uint64
	// Handled counts knocks Handle returned from.
	Handled atomic.Uint64
	// ReceiveErrors counts receive errors the reader survived, ENOBUFS
	// included.
	ReceiveErrors atomic.Uint64
	// Overruns counts ENOBUFS (zero with NETLINK_NO_ENOBUFS; see
	// ReadKernelStats).
	Overruns atomic.Uint64
	// VerdictErrors counts verdict messages the socket refused (one
	// message answers every knock of a receive).
	VerdictErrors atomic.Uint64
	// RepeatLoops counts knocks that came back right after the reader
	// repeated them to refuse them, without the signal bit (a rule above
	// the gate's jump rewrites the mark): they were dropped, and counted
	// in RejectLoops too.
	RepeatLoops atomic.Uint64
	// Rejected counts packets answered with the reject mark.
	Rejected atomic.Uint64
	// RejectLoops counts packets to reject that already carried the reject
	// mark: the rules queued a marked packet again instead of rejecting
	// it, so it was dropped rather than repeated forever.
	RejectLoops atomic.Uint64
}

// The lanes, in the order the workers empty them.
const (
	lanePriorityFast   = iota // fast knocks of Priority's sources
	laneFast                  // fast knocks (Classify)
	lanePriorityCommon        // other knocks of Priority's sources
	laneCommon                // every other knock (Depth long)
	numLanes
)

// knockJob is one copied knock on its way to a worker.
type knockJob struct {
	src netip.Addr
	buf []byte // a pool buffer, sliced to the payload
}

// KnockReader serves the knock queue: it copies each knock's UDP payload
// into a pooled buffer and hands the copy to a bounded pool of workers,
// then answers the receive's packets, all alike, with one batch verdict:
// a drop, or a repeat with the reject mark (SetReject). The receive
// goroutine never blocks on the workers.
type KnockReader struct {
	cfg     KnockConfig
	stats   *KnockStats
	running atomic.Bool
	// reject is read once per receive, so a change applies from the next.
	reject atomic.Bool
	// repeats catches refused knocks that come back stripped of their
	// signal (the receive goroutine's).
	repeats *Repeats

	// lanes are the bounded queues to the workers, in the order the
	// workers empty them (laneOrder); the receive goroutine sheds a knock
	// whose lane is full (a non-blocking send). A lane the
	// configuration does not use is nil.
	lanes [numLanes]chan knockJob
	// free holds the buffers not in use: one per place in the lanes, one
	// per worker, one in the receive goroutine, so it is never empty
	// while the lanes' bounds hold.
	free chan []byte

	// sock and hdr belong to the one receive goroutine while Run runs.
	sock Socket
	hdr  packet.Header
}

// NewKnock checks cfg, fills in its defaults, allocates the buffer pool
// ((the lanes' depths+Workers+1)×CopyRange bytes) and returns a reader
// that Run starts.
func NewKnock(cfg KnockConfig) (*KnockReader, error) {
	if cfg.Handle == nil {
		return nil, errors.New("queue: knock config: Handle is nil")
	}
	if cfg.Workers < 0 || cfg.Depth < 0 {
		return nil, fmt.Errorf("queue: knock config: Workers %d and Depth %d must not be negative", cfg.Workers, cfg.Depth)
	}
	if (cfg.Queued == nil) != (cfg.Unhandled == nil) {
		return nil, errors.New("queue: knock config: Queued and Unhandled go together")
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Depth == 0 {
		cfg.Depth = DefaultKnockDepth
	}
	if cfg.CopyRange == 0 {
		cfg.CopyRange = DefaultKnockCopyRange
	}
	if cfg.MaxQueueLen == 0 {
		cfg.MaxQueueLen = DefaultKnockMaxQueueLen
	}
	if cfg.ReadBuffer == 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	if cfg.Stats == nil {
		cfg.Stats = new(KnockStats)
	}
	if cfg.Open == nil {
		cfg.Open = OpenNFQueue
	}
	if cfg.RejectMark == 0 {
		cfg.RejectMark = DefaultRejectMark
	}
	if cfg.PriorityDepth < 0 || cfg.FastDepth < 0 {
		return nil, fmt.Errorf("queue: knock config: PriorityDepth %d and FastDepth %d must not be negative", cfg.PriorityDepth, cfg.FastDepth)
	}
	if cfg.Priority == nil {
		cfg.PriorityDepth = 0
	} else if cfg.PriorityDepth == 0 {
		cfg.PriorityDepth = max(1, cfg.Depth/4)
	}
	if cfg.Classify == nil {
		cfg.FastDepth = 0
	} else if cfg.FastDepth == 0 {
		cfg.FastDepth = cfg.Depth
	}
	k := &KnockReader{cfg: cfg, stats: cfg.Stats, repeats: NewRepeats(nil)}
	depths := [numLanes]int{laneCommon: cfg.Depth}
	if cfg.Priority != nil {
		depths[lanePriorityCommon] = cfg.PriorityDepth
	}
	if cfg.Classify != nil {
		depths[laneFast] = cfg.FastDepth
		if cfg.Priority != nil {
			depths[lanePriorityFast] = cfg.PriorityDepth
		}
	}
	places := 0
	for lane, depth := range depths {
		if depth > 0 {
			k.lanes[lane] = make(chan knockJob, depth)
			places += depth
		}
	}
	k.free = make(chan []byte, places+cfg.Workers+1)
	k.reject.Store(cfg.Reject)
	size := int(cfg.CopyRange)
	backing := make([]byte, cap(k.free)*size)
	for i := range cap(k.free) {
		k.free <- backing[i*size : (i+1)*size : (i+1)*size]
	}
	return k, nil
}

// Stats returns the reader's counters.
func (k *KnockReader) Stats() *KnockStats { return k.stats }

// SetReject sets how knocks are answered from the next receive on: true,
// as a closed port (repeated with the reject mark, which the rules
// REJECT); false, dropped. Safe to call while Run runs; the daemon calls
// it when a reload changes the policy.
func (k *KnockReader) SetReject(reject bool) { k.reject.Store(reject) }

// Rejecting reports what SetReject (or KnockConfig.Reject) last set.
func (k *KnockReader) Rejecting() bool { return k.reject.Load() }

// Run starts the workers, binds the knock queue and serves it until ctx is
// done; then it unbinds and waits for the workers, which finish the knock
// in hand and leave the rest unhandled. After Run returns, Handle is not
// called again.
func (k *KnockReader) Run(ctx context.Context) error {
	if !k.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer k.running.Store(false)
	sock, err := k.cfg.Open(SocketConfig{
		Queue:       k.cfg.Queue,
		CopyRange:   k.cfg.CopyRange,
		MaxQueueLen: k.cfg.MaxQueueLen,
		ReadBuffer:  k.cfg.ReadBuffer,
		NetNS:       k.cfg.NetNS,
	})
	if err != nil {
		return fmt.Errorf("knock: %w", err)
	}
	k.sock = sock

	workCtx, stopWorkers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range k.cfg.Workers {
		wg.Go(func() { k.worker(workCtx) })
	}
	err = serve(ctx, sock, k.handleBatch, func(err error) { countReceiveError(err, &k.stats.ReceiveErrors, &k.stats.Overruns) })
	stopWorkers()
	wg.Wait()
	k.drain()
	return err
}

// handleBatch is the receive goroutine's path for one receive's packets:
// copy and hand off each, then answer them all alike, with one verdict
// message as a rule.
func (k *KnockReader) handleBatch(pkts []Packet) {
	if len(pkts) == 0 {
		return
	}
	for i := range pkts {
		k.handle(pkts[i])
	}
	if k.reject.Load() {
		k.rejectAll(pkts)
		return
	}
	// The last packet is the newest in the kernel's order, which wraps
	// around at 2^32: not necessarily the largest id.
	k.answerThrough(pkts[len(pkts)-1].ID, kernelVerdict{verdict: NFDrop})
}

// rejectAll answers pkts as a closed port does: each is repeated with the
// reject mark ORed into its own, and the rules' mark rule rejects it. A
// batch verdict sets one mark on every packet it covers, so each run of
// packets with the same mark gets one message; knocks carry no mark of
// their own as a rule, so that is one message a receive. A packet that
// already had the reject bit is dropped instead (the rules sent it back
// rather than rejecting it), which ends its run.
func (k *KnockReader) rejectAll(pkts []Packet) {
	st := k.stats
	start := 0
	var run kernelVerdict
	for i := range pkts {
		kv, loop := kernelVerdictOf(&pkts[i], packet.Reject, signalsOf(k.cfg.RejectMark, DefaultAcceptMark), NFDrop)
		kv, again := k.repeats.settle(&pkts[i], kv)
		if again {
			st.RepeatLoops.Add(1)
		}
		if loop || again {
			st.RejectLoops.Add(1)
		} else {
			st.Rejected.Add(1)
		}
		if i > start && kv != run {
			k.answerThrough(pkts[i-1].ID, run)
			start = i
		}
		run = kv
	}
	k.answerThrough(pkts[len(pkts)-1].ID, run)
}

// answerThrough answers the knock packets up to id with one batch
// verdict: as every knock of the queue gets the same answer, one message
// settles a whole run of a receive, and with it any packet of the knock
// queue the kernel still holds before id (one whose message did not
// parse, or was lost to a receive overrun). The copies are taken before:
// the verdict only frees the kernel's.
func (k *KnockReader) answerThrough(id uint32, kv kernelVerdict) {
	if err := k.sock.SetVerdictBatch(id, kv.verdict, kv.mark, kv.withMark); err != nil {
		k.stats.VerdictErrors.Add(1)
	}
}

// handle is the receive goroutine's per-packet path: copy and hand off
// without blocking. handleBatch answers the packet afterwards.
func (k *KnockReader) handle(p Packet) {
	st := k.stats
	st.Received.Add(1)
	k.hdr.Decode(p.Data)
	if k.hdr.Proto != packet.UDP {
		st.Unknown.Add(1)
		return
	}
	if p.Truncated {
		st.Truncated.Add(1)
		return
	}
	var buf []byte
	select {
	case buf = <-k.free:
	default:
		st.Shed.Add(1) // cannot happen while the pool is sized as NewKnock sizes it
		return
	}
	src := k.hdr.Src
	n := copy(buf[:cap(buf)], k.hdr.Payload)
	payload := buf[:n]
	atOnce, fast := false, false
	if k.cfg.Classify != nil {
		atOnce, fast = k.cfg.Classify(payload)
	}
	if atOnce {
		st.Queued.Add(1)
		st.AtOnce.Add(1)
		if k.cfg.Queued != nil {
			k.cfg.Queued(src)
		}
		handle := k.cfg.Handle
		if k.cfg.AtOnce != nil {
			handle = k.cfg.AtOnce
		}
		handle(src, payload)
		k.free <- buf
		st.Handled.Add(1)
		return
	}
	lane := k.lanes[laneCommon]
	prio := k.lanes[lanePriorityCommon]
	if fast {
		lane, prio = k.lanes[laneFast], k.lanes[lanePriorityFast]
	}
	prioritized := prio != nil && len(prio) < cap(prio) && k.cfg.Priority(src)
	if prioritized {
		lane = prio
	}
	if len(lane) == cap(lane) {
		// The workers are the lane's depth behind: shed this one.
		k.free <- buf
		st.Shed.Add(1)
		return
	}
	if prioritized {
		st.Prioritized.Add(1)
	}
	if fast {
		st.Fast.Add(1)
	}
	if k.cfg.Queued != nil {
		k.cfg.Queued(src) // before a worker can finish it
	}
	// This goroutine is the only sender and the workers only take, so
	// there is room: the send does not block.
	lane <- knockJob{src: src, buf: payload}
	st.Queued.Add(1)
}

// worker runs Handle for queued knocks until ctx is done, emptying the
// lanes in their order (a nil lane is never ready).
func (k *KnockReader) worker(ctx context.Context) {
	for {
		if job, ok := k.next(); ok {
			k.process(job)
			// A worker that always finds work never blocks, and so never
			// lets the receive goroutine (back from its receive, waiting
			// for a P) run before the scheduler preempts it, up to 10 ms
			// later: under a flood of knocks that cost an ECDH, that is
			// the kernel's queue filling and dropping knocks of every
			// kind. Yielding after each knock (a knock costs tens of µs,
			// a yield well under one) keeps the reader reading.
			runtime.Gosched()
			continue
		}
		select {
		case <-ctx.Done():
			return
		case job := <-k.lanes[lanePriorityFast]:
			k.process(job)
		case job := <-k.lanes[laneFast]:
			k.process(job)
		case job := <-k.lanes[lanePriorityCommon]:
			k.process(job)
		case job := <-k.lanes[laneCommon]:
			k.process(job)
		}
	}
}

// next takes the first knock waiting, the lanes in their order, without
// blocking.
func (k *KnockReader) next() (knockJob, bool) {
	for _, lane := range k.lanes {
		select {
		case job := <-lane:
			return job, true
		default:
		}
	}
	return knockJob{}, false
}

// process runs Handle for job and returns its buffer to the pool.
func (k *KnockReader) process(job knockJob) {
	defer func() { k.free <- job.buf }()
	k.cfg.Handle(job.src, job.buf)
	k.stats.Handled.Add(1)
}

// drain returns the buffers of knocks left unhandled at shutdown to the
// pool, so that Run can be called again.
func (k *KnockReader) drain() {
	for {
		job, ok := k.next()
		if !ok {
			return
		}
		k.free <- job.buf
		if k.cfg.Unhandled != nil {
			k.cfg.Unhandled(job.src)
		}
	}
}
