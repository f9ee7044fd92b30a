package queue

import "strings"

// HandleGateBatch runs g's path for one receive's packets with s as the
// socket.
func HandleGateBatch(g *GateReader, s Socket, pkts []Packet) {
	g.sock = s
	g.handle(pkts)
}

// HandleKnockPacket runs k's receive-side path for a receive of one
// packet, p, with s as the socket.
func HandleKnockPacket(k *KnockReader, s Socket, p Packet) {
	k.sock = s
	k.handleBatch([]Packet{p})
}

// HandleKnockBatch runs k's receive-side path for one receive's packets
// with s as the socket.
func HandleKnockBatch(k *KnockReader, s Socket, pkts []Packet) {
	k.sock = s
	k.handleBatch(pkts)
}

// ProcessOneKnock runs the first queued knock, in the workers' lane
// order, through Handle on the calling goroutine, as a worker would; it
// reports false when none was queued.
func ProcessOneKnock(k *KnockReader) bool {
	job, ok := k.next()
	if ok {
		k.process(job)
	}
	return ok
}

// FreeBuffers returns how many pool buffers are free.
func FreeBuffers(k *KnockReader) int { return len(k.free) }

// KernelStatsPath is the file ReadKernelStats reads, for tests that read
// it inside another network namespace.
const KernelStatsPath = kernelStatsPath

// ParseKernelStats finds queue in text, the contents of KernelStatsPath,
// as ReadKernelStats does.
func ParseKernelStats(text string, queue uint16) (KernelStats, error) {
	return parseKernelStats(strings.NewReader(text), queue)
}
