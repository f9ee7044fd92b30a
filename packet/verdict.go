package packet

import "strconv"

// Verdict is the answer for one packet. The zero value is Drop, so a
// forgotten verdict fails closed.
type Verdict uint8

// The verdicts.
const (
	// Drop discards the packet silently.
	Drop Verdict = iota
	// Accept lets the packet through.
	Accept
	// Reject answers as a closed port would: a TCP reset or an ICMP port
	// unreachable (the reader repeats the packet with the reject mark,
	// which the static rules REJECT).
	Reject
	// Defer sets the packet aside until something it waits for is decided
	// (a SYN racing its own knock): the gate reader moves it to the hold
	// queue, whose reader asks again later. A reader without a hold queue
	// drops it.
	Defer
)

// String returns "drop", "accept", "reject" or "defer", or "verdict(N)".
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case Defer:
		return "defer"
	}
	return "verdict(" + strconv.Itoa(int(v)) + ")"
}
