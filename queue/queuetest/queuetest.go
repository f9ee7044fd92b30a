// Package queuetest fakes the NFQUEUE socket so that readers, and the code
// wiring them, can be tested without root: packets injected into a Socket
// go through the reader's real per-packet path, and the verdicts it gives
// are recorded.
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
	// Verdict is the kernel verdict: queue.NFAccept, NFDrop or NFRepeat.
	Verdict int
	// Mark is the mark set with the verdict; meaningful when WithMark.
	Mark uint32
	// WithMark reports that the verdict set the mark.
	WithMark bool
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
}

type injected struct {
	pkt  queue.Packet
	err  error
	done chan struct{}
}

// New returns a fake socket with no packets waiting.
func New() *Socket {
	return &Socket{in: make(chan injected), closed: make(chan struct{})}
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

// InjectPacket queues p as it is and returns once the reader's handler
// returned.
func (s *Socket) InjectPacket(ctx context.Context, p queue.Packet) error {
	return s.send(ctx, injected{pkt: p, done: make(chan struct{})})
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
// packet, on the calling goroutine, until ctx is done.
func (s *Socket) Serve(ctx context.Context, handle func(queue.Packet), onError func(error)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case in := <-s.in:
			if in.err != nil {
				onError(in.err)
			} else {
				handle(in.pkt)
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

func (s *Socket) record(v Verdict) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.verdicts = append(s.verdicts, v)
	return s.verdictErr
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
