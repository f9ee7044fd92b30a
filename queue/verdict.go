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

// Default signal bits of a reader whose configuration names none: the
// rules' defaults (rules.DefaultMark, rules.DefaultAcceptMark).
const (
	// DefaultRejectMark is ORed into the mark of a packet repeated to be
	// refused.
	DefaultRejectMark = 0x40000000
	// DefaultAcceptMark is ORed into the mark of a packet repeated to be
	// granted.
	DefaultAcceptMark = 0x20000000
)

// signals are the mark bits a verdict that needs the rules' help sets
// before NF_REPEAT: the gate chain's first rules clear them at once.
type signals struct {
	reject, accept uint32
}

// signalsOf fills in the defaults of zero bits.
func signalsOf(reject, accept uint32) signals {
	if reject == 0 {
		reject = DefaultRejectMark
	}
	if accept == 0 {
		accept = DefaultAcceptMark
	}
	return signals{reject: reject, accept: accept}
}

// kernelVerdict is what the kernel is told about one packet.
type kernelVerdict struct {
	verdict  int // NFAccept, NFDrop, NFRepeat or QueueTo(n)
	mark     uint32
	withMark bool
	// refuses is set on a repeat that refuses: it fails closed, as a drop.
	refuses bool
}

// failsClosed reports whether kv, sweeping up a packet no one decided
// (a batch verdict covers every waiting packet up to its id), can only
// keep it out.
func (kv kernelVerdict) failsClosed() bool { return kv.verdict == NFDrop || kv.refuses }

// kernelVerdictOf turns v for p into the kernel's verdict. Accept and
// Reject repeat the packet with their signal bit set, so that the rules
// carry them out and the rest of the host's rules still see it; deferTo is
// the verdict for Defer (QueueTo the hold queue, or NFDrop without one).
// It reports loop when the packet already carried the signal bit: the
// rules sent it back to the queue instead of taking the signal, so it is
// answered without a repeat, accepted or dropped.
func kernelVerdictOf(p *Packet, v packet.Verdict, sig signals, deferTo int) (kv kernelVerdict, loop bool) {
	switch v {
	case packet.Accept:
		if p.Mark&sig.accept != 0 {
			return kernelVerdict{verdict: NFAccept}, true
		}
		return kernelVerdict{verdict: NFRepeat, mark: p.Mark | sig.accept, withMark: true}, false
	case packet.Reject:
		if p.Mark&sig.reject != 0 {
			return kernelVerdict{verdict: NFDrop}, true
		}
		return kernelVerdict{verdict: NFRepeat, mark: p.Mark | sig.reject, withMark: true, refuses: true}, false
	case packet.Defer:
		return kernelVerdict{verdict: deferTo}, false
	default:
		return kernelVerdict{verdict: NFDrop}, false
	}
}

// withoutRepeat is kv answered without NF_REPEAT, for a packet that came
// back from a repeat it should not have (see Repeats): a grant accepts
// (the rest of the mangle table no longer sees it, as before repeats
// existed), a refusal drops (fail closed).
func withoutRepeat(kv kernelVerdict) kernelVerdict {
	if kv.refuses {
		return kernelVerdict{verdict: NFDrop}
	}
	return kernelVerdict{verdict: NFAccept}
}
