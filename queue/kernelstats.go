package queue

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// kernelStatsPath lists the bound queues of the reading process's network
// namespace, one line each.
const kernelStatsPath = "/proc/net/netfilter/nfnetlink_queue"

// ErrQueueNotBound is returned by ReadKernelStats for a queue no socket is
// bound to.
var ErrQueueNotBound = errors.New("queue: nfqueue not bound")

// KernelStats are the kernel's counters of one bound queue. They count what
// the readers cannot see themselves: packets the kernel dropped before we
// received them.
type KernelStats struct {
	// Queue is the queue number.
	Queue uint16
	// PortID is the netlink port id of the bound socket.
	PortID uint32
	// Waiting is how many packets wait for a verdict now.
	Waiting uint32
	// CopyRange is the bound socket's copy range.
	CopyRange uint32
	// QueueDropped counts packets dropped because MaxQueueLen packets were
	// already waiting.
	QueueDropped uint64
	// UserDropped counts packets dropped because the socket's receive
	// buffer was full (what ENOBUFS would report).
	UserDropped uint64
	// IDSequence is the last packet id handed out.
	IDSequence uint32
}

// ReadKernelStats reads the kernel's counters of queue from
// /proc/net/netfilter/nfnetlink_queue, as seen from the caller's network
// namespace.
func ReadKernelStats(queue uint16) (KernelStats, error) {
	f, err := os.Open(kernelStatsPath)
	if errors.Is(err, fs.ErrNotExist) {
		return KernelStats{}, fmt.Errorf("read nfqueue %d stats: %w (no nfnetlink_queue module loaded, or /proc/net/netfilter hidden, as systemd's ProcSubset=pid hides it)", queue, err)
	}
	if err != nil {
		return KernelStats{}, fmt.Errorf("read nfqueue %d stats: %w", queue, err)
	}
	defer f.Close()
	st, err := parseKernelStats(f, queue)
	if err != nil {
		return KernelStats{}, fmt.Errorf("read nfqueue %d stats from %s: %w", queue, kernelStatsPath, err)
	}
	return st, nil
}

// parseKernelStats finds queue's line in the nfnetlink_queue format:
// queue, port id, waiting, copy mode, copy range, queue dropped, user
// dropped, id sequence, 1.
func parseKernelStats(r io.Reader, queue uint16) (KernelStats, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		var n [8]uint64
		ok := true
		for i := range n {
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				ok = false
				break
			}
			n[i] = v
		}
		if !ok || n[0] != uint64(queue) {
			continue
		}
		return KernelStats{
			Queue: queue, PortID: uint32(n[1]), Waiting: uint32(n[2]), CopyRange: uint32(n[4]),
			QueueDropped: n[5], UserDropped: n[6], IDSequence: uint32(n[7]),
		}, nil
	}
	if err := sc.Err(); err != nil {
		return KernelStats{}, err
	}
	return KernelStats{}, ErrQueueNotBound
}
