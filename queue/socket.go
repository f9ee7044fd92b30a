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
	// Serve calls handle for every queued packet, always from the same
	// single goroutine, and onError for every receive error that did not
	// stop it, until ctx is done; then it returns nil. It returns an error
	// when it cannot start or when the socket fails for good.
	Serve(ctx context.Context, handle func(Packet), onError func(error)) error
	// SetVerdict gives the kernel verdict (NFAccept, NFDrop, NFRepeat) for
	// packet id, leaving its mark unchanged.
	SetVerdict(id uint32, verdict int) error
	// SetVerdictWithMark gives the kernel verdict for packet id and sets
	// its mark.
	SetVerdictWithMark(id uint32, verdict int, mark uint32) error
	// Close releases the socket. Readers call it after the context given
	// to Serve is done.
	Close() error
}

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
