package gate

import "fmt"

// Verdict is the gate's answer for one packet to a protected port.
type Verdict uint8

// The gate's verdicts.
const (
	Drop   Verdict = iota // silently discard (also for anything unknown)
	Accept                // let it through
	Reject                // answer as a closed port would: TCP RST, ICMP port unreachable
)

// String returns "drop", "accept" or "reject".
func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Policy is what the gate does with a packet from a source without a
// grant (the original's firewallPolicy).
type Policy uint8

// The policies.
const (
	PolicyDrop   Policy = iota // drop: the port looks filtered
	PolicyReject               // reject: the port looks closed
	PolicyNone                 // audit: accept, and log "would deny"
)

// ParsePolicy reads "drop", "reject" or "none".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "drop":
		return PolicyDrop, nil
	case "reject":
		return PolicyReject, nil
	case "none":
		return PolicyNone, nil
	}
	return 0, fmt.Errorf("unknown policy %q (want drop, reject or none)", s)
}

// String returns the policy's configuration name.
func (p Policy) String() string {
	switch p {
	case PolicyDrop:
		return "drop"
	case PolicyReject:
		return "reject"
	case PolicyNone:
		return "none"
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// denyVerdict is the verdict the policy gives a packet without a grant.
func (p Policy) denyVerdict() Verdict {
	switch p {
	case PolicyReject:
		return Reject
	case PolicyNone:
		return Accept
	}
	return Drop
}
