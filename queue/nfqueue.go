package queue

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
)

// receiveErrorPause is how long the receive loop waits after an
// unexpected receive error, so that an error that repeats at once (a
// broken socket) cannot spin a CPU. ENOBUFS does not wait: the reader must
// catch up.
const receiveErrorPause = 10 * time.Millisecond

// nfSocket adapts go-nfqueue to Socket.
type nfSocket struct {
	nf    *nfqueue.Nfqueue
	queue uint16
}

// OpenNFQueue binds the NFQUEUE cfg names through go-nfqueue: full packet
// copy up to cfg.CopyRange, no fail-open (a full queue drops), NETLINK_NO_ENOBUFS
// set (overruns then show only in the kernel's counters, see
// ReadKernelStats), and the receive buffer forced to cfg.ReadBuffer when
// the process may (CAP_NET_ADMIN), else raised as far as rmem_max allows.
func OpenNFQueue(cfg SocketConfig) (Socket, error) {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      cfg.Queue,
		MaxQueueLen:  cfg.MaxQueueLen,
		MaxPacketLen: cfg.CopyRange,
		Copymode:     nfqueue.NfQnlCopyPacket,
		NetNS:        cfg.NetNS,
	})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", cfg.Queue, err)
	}
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		nf.Close()
		return nil, fmt.Errorf("nfqueue %d: set NETLINK_NO_ENOBUFS: %w", cfg.Queue, err)
	}
	if cfg.ReadBuffer > 0 {
		if err := setReadBuffer(nf.Con, cfg.ReadBuffer); err != nil {
			nf.Close()
			return nil, fmt.Errorf("nfqueue %d: set receive buffer to %d bytes: %w", cfg.Queue, cfg.ReadBuffer, err)
		}
	}
	return &nfSocket{nf: nf, queue: cfg.Queue}, nil
}

// Serve registers with go-nfqueue, which receives and calls handle in one
// goroutine of its own (socketCallback), and blocks until ctx is done or
// the socket fails.
func (s *nfSocket) Serve(ctx context.Context, handle func(Packet), onError func(error)) error {
	failed := make(chan error, 1)
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			onError(ErrNoPacketID)
			return 0
		}
		p := Packet{ID: *a.PacketID}
		if a.Mark != nil {
			p.Mark = *a.Mark
		}
		if a.Payload != nil {
			p.Data = *a.Payload
		}
		// The kernel sends the original length only when it cut the packet.
		p.Truncated = a.CapLen != nil && int(*a.CapLen) > len(p.Data)
		handle(p)
		return 0
	}
	// go-nfqueue stops its receive loop when this returns non-zero.
	errFn := func(err error) int {
		if ctx.Err() != nil {
			return 1 // the deadline go-nfqueue set to interrupt Receive
		}
		if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed) {
			select {
			case failed <- err:
			default:
			}
			return 1
		}
		onError(err)
		if !isENOBUFS(err) {
			time.Sleep(receiveErrorPause)
		}
		return 0
	}
	if err := s.nf.RegisterWithErrorFunc(ctx, hook, errFn); err != nil {
		return fmt.Errorf("register on nfqueue %d: %w", s.queue, err)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return fmt.Errorf("receive from nfqueue %d: %w", s.queue, err)
	}
}

// SetVerdict implements Socket.
func (s *nfSocket) SetVerdict(id uint32, verdict int) error {
	return s.nf.SetVerdict(id, verdict)
}

// SetVerdictWithMark implements Socket.
func (s *nfSocket) SetVerdictWithMark(id uint32, verdict int, mark uint32) error {
	return s.nf.SetVerdictWithOption(id, verdict, nfqueue.WithMark(mark))
}

// Close implements Socket. go-nfqueue's receive goroutine has already
// seen the cancelled context by then (Serve's caller cancels first), so it
// leaves its loop instead of reading from a closed socket.
func (s *nfSocket) Close() error {
	if err := s.nf.Close(); err != nil {
		return fmt.Errorf("close nfqueue %d: %w", s.queue, err)
	}
	return nil
}
