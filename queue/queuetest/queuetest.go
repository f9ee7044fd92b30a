// Package queuetest fakes the NFQUEUE socket so that readers, and the code
// wiring them, can be tested without root: packets injected into a Socket
// go through the reader's real path, one receive batch per injection, and
// the verdicts it gives are recorded and applied to a model of the
// kernel's queue, so that a test sees which packets a batch verdict
// covered and which still wait.
package queuetest

import (
	"context"
	"errors"
	"sync"

	"sknock/queue"
)

// Verdict is one verdict a reader gave.
type Verdict struct {
	// ID is the packet id.
	ID uint32
	// Verdict is the kernel verdict: queue.NFAccept, NFDrop, NFRepeat or
	// queue.QueueTo(n).
	Verdict int
	// Mark is the mark set with the verdict; meaningful when WithMark.
	Mark uint32
	// WithMark reports that the verdict set the mark.
	WithMark bool
	// Batch reports a batch verdict: it applies to every packet still
	// waiting whose id is at most ID.
	Batch bool
}

// ErrClosed is returned by Inject after the socket was closed.
var ErrClosed = errors.New("queuetest: socket closed")

// Socket is a fake queue.Socket. Its zero value is not usable; call New.
type Socket struct {
	in        chan injected
	closed    chan struct{}
	closeOnce sync.Once

	mu         sync.Mutex // guards the fields below
	verdicts   []Verdict
	configs    []queue.SocketConfig
	nextID     uint32
	verdictErr error
	waiting    []uint32           // ids injected and not yet settled, in order
	settled    map[uint32]Verdict // the verdict that settled each id
}

type injected struct {
	pkts []queue.Packet
	err  error
	done chan struct{}
}

// New returns a fake socket with no packets waiting.
func New() *Socket {
	return &Socket{in: make(chan injected), closed: make(chan struct{}), settled: map[uint32]Verdict{}}
}

// Open is a queue.Opener that hands out s and records cfg.
func (s *Socket) Open(cfg queue.SocketConfig) (queue.Socket, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.configs = append(s.configs, cfg)
	return s, nil
}

// Configs returns the configurations s was opened with.
func (s *Socket) Configs() []queue.SocketConfig {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]queue.SocketConfig(nil), s.configs...)
}

// Inject queues data (an IP packet) with the next packet id and no mark,
// and returns once the reader's handler returned. It returns the id.
func (s *Socket) Inject(ctx context.Context, data []byte) (uint32, error) {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	s.mu.Unlock()
	return id, s.InjectPacket(ctx, queue.Packet{ID: id, Data: data})
}

// InjectData queues each of data (IP packets) with the next packet ids and
// no mark, as one receive batch, and returns once the reader's handler
// returned. It returns the ids.
func (s *Socket) InjectData(ctx context.Context, data ...[]byte) ([]uint32, error) {
	pkts := make([]queue.Packet, len(data))
	ids := make([]uint32, len(data))
	s.mu.Lock()
	for i, d := range data {
		s.nextID++
		ids[i] = s.nextID
		pkts[i] = queue.Packet{ID: s.nextID, Data: d}
	}
	s.mu.Unlock()
	return ids, s.InjectBatch(ctx, pkts)
}

// InjectPacket queues p as it is and returns once the reader's handler
// returned.
func (s *Socket) InjectPacket(ctx context.Context, p queue.Packet) error {
	return s.InjectBatch(ctx, []queue.Packet{p})
}

// InjectBatch hands pkts to the reader as one receive batch, as the kernel
// would have queued them (ids should increase), and returns once the
// reader's handler returned.
func (s *Socket) InjectBatch(ctx context.Context, pkts []queue.Packet) error {
	s.mu.Lock()
	for _, p := range pkts {
		s.waiting = append(s.waiting, p.ID)
	}
	s.mu.Unlock()
	return s.send(ctx, injected{pkts: pkts, done: make(chan struct{})})
}

// InjectError makes Serve report err as a receive error, and returns once
// it did.
func (s *Socket) InjectError(ctx context.Context, err error) error {
	return s.send(ctx, injected{err: err, done: make(chan struct{})})
}

func (s *Socket) send(ctx context.Context, in injected) error {
	select {
	case s.in <- in:
	case <-s.closed:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Serve implements queue.Socket: it calls handle for every injected
// batch, on the calling goroutine, until ctx is done.
func (s *Socket) Serve(ctx context.Context, handle func([]queue.Packet), onError func(error)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-s.in:
			if in.err != nil {
				onError(in.err)
			} else {
				handle(in.pkts)
			}
			close(in.done)
		}
	}
}

// SetVerdict implements queue.Socket and records the verdict.
func (s *Socket) SetVerdict(id uint32, verdict int) error {
	return s.record(Verdict{ID: id, Verdict: verdict})
}

// SetVerdictWithMark implements queue.Socket and records the verdict.
func (s *Socket) SetVerdictWithMark(id uint32, verdict int, mark uint32) error {
	return s.record(Verdict{ID: id, Verdict: verdict, Mark: mark, WithMark: true})
}

// SetVerdictBatch implements queue.Socket and records the verdict.
func (s *Socket) SetVerdictBatch(id uint32, verdict int, mark uint32, withMark bool) error {
	return s.record(Verdict{ID: id, Verdict: verdict, Mark: mark, WithMark: withMark, Batch: true})
}

// record records v and, unless verdicts fail, settles the waiting packets
// it covers as the kernel would.
func (s *Socket) record(v Verdict) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verdicts = append(s.verdicts, v)
	if s.verdictErr != nil {
		return s.verdictErr
	}
	still := s.waiting[:0]
	for _, id := range s.waiting {
		if id == v.ID || (v.Batch && id < v.ID) {
			s.settled[id] = v
			continue
		}
		still = append(still, id)
	}
	s.waiting = still
	return nil
}

// Waiting returns the ids of the injected packets no verdict has covered
// yet, in order.
func (s *Socket) Waiting() []uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint32(nil), s.waiting...)
}

// Settled returns the verdict that covered packet id (for a batch verdict,
// its ID is the batch's last id), and whether one did.
func (s *Socket) Settled(id uint32) (Verdict, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.settled[id]
	return v, ok
}

// FailVerdicts makes every later verdict return err (still recording it);
// nil restores success.
func (s *Socket) FailVerdicts(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verdictErr = err
}

// Verdicts returns the verdicts given so far, in order.
func (s *Socket) Verdicts() []Verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Verdict(nil), s.verdicts...)
}

// Close implements queue.Socket; later injections fail with ErrClosed.
func (s *Socket) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}
