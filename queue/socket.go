package queue

import (
	"context"
	"errors"
)

// Packet is one queued packet as the kernel handed it over.
type Packet struct {
	// ID is the kernel's packet id, which the verdict names.
	ID uint32
	// Mark is the packet's mark (zero when it has none).
	Mark uint32
	// Data is the packet from its IP header on, up to the copy range. It
	// is valid only until the handler returns.
	Data []byte
	// Truncated reports that the copy range cut the packet short.
	Truncated bool
}

// Socket is one bound NFQUEUE as a reader uses it: the package's boundary
// with the kernel. OpenNFQueue returns the real one; queuetest.Socket is a
// fake.
type Socket interface {
	// Serve calls handle with every batch of queued packets, always from
	// the same single goroutine, and onError for every receive error that
	// did not stop it, until ctx is done; then it returns nil. It returns
	// an error when it cannot start or when the socket fails for good.
	//
	// A batch is what one drain of the socket's receive buffer held (at
	// most MaxBatch packets), in the kernel's order, which is the order of
	// their ids; it is never empty. The slice and the packets' Data are
	// valid only until handle returns. A reader gives every packet of a
	// batch its verdict before handle returns, so that a batch verdict
	// never covers a packet the reader has not decided.
	Serve(ctx context.Context, handle func([]Packet), onError func(error)) error
	// SetVerdict gives the kernel verdict (NFAccept, NFDrop, NFRepeat) for
	// packet id, leaving its mark unchanged.
	SetVerdict(id uint32, verdict int) error
	// SetVerdictWithMark gives the kernel verdict for packet id and sets
	// its mark.
	SetVerdictWithMark(id uint32, verdict int, mark uint32) error
	// SetVerdictBatch gives the kernel verdict to every packet of this
	// queue still waiting for one whose id is at most id
	// (NFQNL_MSG_VERDICT_BATCH), leaving marks unchanged; with withMark it
	// sets each one's mark to mark.
	SetVerdictBatch(id uint32, verdict int, mark uint32, withMark bool) error
	// Close releases the socket. Readers call it after the context given
	// to Serve is done.
	Close() error
}

// MaxBatch bounds the packets Socket.Serve hands over at once: the first
// of them waits for the verdict at most as long as the reader takes to
// decide the others.
const MaxBatch = 64

// SocketConfig says how to bind a Socket.
type SocketConfig struct {
	// Queue is the NFQUEUE number (iptables --queue-num).
	Queue uint16
	// CopyRange is how many bytes of each packet, from the IP header on,
	// the kernel copies to us.
	CopyRange uint32
	// MaxQueueLen is how many packets the kernel holds waiting for a
	// verdict before it drops new ones; zero: the kernel default, 1024.
	MaxQueueLen uint32
	// ReadBuffer is the socket receive buffer in bytes; zero or negative:
	// the system default.
	ReadBuffer int
	// NetNS is a file descriptor of the network namespace to bind the
	// queue in; zero: the caller's namespace.
	NetNS int
}

// Opener binds a Socket. OpenNFQueue is the real one.
type Opener func(SocketConfig) (Socket, error)

// Errors a reader reports or passes to Socket.Serve's onError.
var (
	// ErrRunning is returned by Run when the reader is already running.
	ErrRunning = errors.New("queue: reader already running")
	// ErrNoPacketID is a queued message without a packet id, which cannot
	// be given a verdict.
	ErrNoPacketID = errors.New("queue: message without packet id")
)
