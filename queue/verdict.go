package queue

import (
	"errors"

	"sknock/packet"
)

// Kernel verdicts a Socket passes to the kernel; the values of NF_DROP,
// NF_ACCEPT, NF_QUEUE and NF_REPEAT. NFQueue carries the target queue in
// its upper 16 bits (see QueueTo).
const (
	NFDrop   = 0
	NFAccept = 1
	NFQueue  = 3
	NFRepeat = 4
)

// errInvalidVerdict is a verdict no reader sends.
var errInvalidVerdict = errors.New("invalid verdict")

// QueueTo returns the kernel verdict that moves a packet to queue num:
// NF_QUEUE with the number in the upper bits. If nothing reads that
// queue, the kernel drops the packet (no bypass flag).
func QueueTo(num uint16) int { return NFQueue | int(num)<<16 }

// validVerdict reports whether verdict is one a reader sends.
func validVerdict(verdict int) bool {
	switch verdict & 0xffff {
	case NFAccept, NFDrop, NFRepeat:
		return verdict>>16 == 0
	case NFQueue:
		return true
	}
	return false
}

// DefaultRejectMark is the mark bit a reader ORs into a rejected packet's
// mark when its configuration names none.
const DefaultRejectMark = 0x1

// kernelVerdict is what the kernel is told about one packet.
type kernelVerdict struct {
	verdict  int // NFAccept, NFDrop, NFRepeat or QueueTo(n)
	mark     uint32
	withMark bool
}

// kernelVerdictOf turns v for p into the kernel's verdict. reject is the
// mark bit of Reject; deferTo is the verdict for Defer (QueueTo the hold
// queue, or NFDrop without one). It reports loop when a packet to reject
// already carried the reject bit: the rules sent a marked packet back to
// the queue instead of rejecting it, so it is dropped rather than
// repeated forever.
func kernelVerdictOf(p *Packet, v packet.Verdict, reject uint32, deferTo int) (kv kernelVerdict, loop bool) {
	switch v {
	case packet.Accept:
		return kernelVerdict{verdict: NFAccept}, false
	case packet.Reject:
		if p.Mark&reject != 0 {
			return kernelVerdict{verdict: NFDrop}, true
		}
		return kernelVerdict{verdict: NFRepeat, mark: p.Mark | reject, withMark: true}, false
	case packet.Defer:
		return kernelVerdict{verdict: deferTo}, false
	default:
		return kernelVerdict{verdict: NFDrop}, false
	}
}
