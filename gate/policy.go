package gate

import (
	"fmt"

	"sknock/packet"
)

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
func (p Policy) denyVerdict() packet.Verdict {
	switch p {
	case PolicyReject:
		return packet.Reject
	case PolicyNone:
		return packet.Accept
	}
	return packet.Drop
}
