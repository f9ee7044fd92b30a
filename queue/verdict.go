package queue

import (
	"strconv"

	nfqueue "github.com/florianl/go-nfqueue/v2"
)

// Verdict is what a decision function says about one packet.
type Verdict uint8

// The verdicts. The zero value is Drop, so a forgotten verdict fails closed.
const (
	// Drop discards the packet silently.
	Drop Verdict = iota
	// Accept lets the packet through with its mark unchanged.
	Accept
	// Reject sends the packet back through the hook (NF_REPEAT) with the
	// reader's reject mark OR-ed into its mark; the static rules REJECT
	// marked packets, so the peer sees a TCP reset or an ICMP port
	// unreachable, exactly like a closed port.
	Reject
)

// String returns "drop", "accept" or "reject", or "verdict(N)" otherwise.
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}

// Kernel verdicts a Socket passes to the kernel; the values of NF_DROP,
// NF_ACCEPT and NF_REPEAT.
const (
	NFDrop   = nfqueue.NfDrop
	NFAccept = nfqueue.NfAccept
	NFRepeat = nfqueue.NfRepeat
)

// DefaultRejectMark is the mark bit a reader ORs into a rejected packet's
// mark when its configuration names none.
const DefaultRejectMark = 0x1

// kernelVerdict is what the kernel is told about one packet.
type kernelVerdict struct {
	verdict  int // NFAccept, NFDrop or NFRepeat
	mark     uint32
	withMark bool
}

// kernelVerdictOf turns v for p into the kernel's verdict. reject is the
// mark bit of Reject. It reports loop when p already carried that bit: the
// rules sent a marked packet back to the queue instead of rejecting it, so
// it is dropped rather than repeated forever.
func kernelVerdictOf(p *Packet, v Verdict, reject uint32) (kv kernelVerdict, loop bool) {
	switch v {
	case Accept:
		return kernelVerdict{verdict: NFAccept}, false
	case Reject:
		if p.Mark&reject != 0 {
			return kernelVerdict{verdict: NFDrop}, true
		}
		return kernelVerdict{verdict: NFRepeat, mark: p.Mark | reject, withMark: true}, false
	default:
		return kernelVerdict{verdict: NFDrop}, false
	}
}
