package gate

import "fmt"

// Reason says why a knock was denied. The zero Reason means granted.
// Reasons are small integers so they can index counters.
type Reason uint8

// The reasons a knock is denied, in the order the checks run.
const (
	ReasonNone            Reason = iota // granted
	ReasonMappedSource                  // source is an IPv4 address in IPv6 form (v4-mapped or v4-compatible)
	ReasonMalformed                     // too short, not sKnock, bad version or layout
	ReasonProtocolRefused               // a wire version the configuration refuses (knock.protocols)
	ReasonBadMAC1                       // v2 mac1 wrong: not made with this server's certificate
	ReasonUndecryptable                 // bad ephemeral key or padding: not for this server
	ReasonReplay                        // this datagram was seen before
	ReasonUntrusted                     // certificate unparsable, not from the CA, or unusable
	ReasonExpired                       // certificate (or its CA) expired
	ReasonNotYetValid                   // certificate (or its CA) not yet valid
	ReasonRevoked                       // certificate on the CA's CRL
	ReasonBadSignature                  // signature does not verify with the certificate's key
	ReasonStaleTimestamp                // timestamp older than the tolerance
	ReasonFutureTimestamp               // timestamp further ahead than the tolerance
	ReasonSourceMismatch                // embedded client address differs from the datagram's source, or is IPv4 over IPv6
	ReasonNotAuthorized                 // certificate does not allow this protocol and port
	ReasonOverload                      // a bounded table is full; denied rather than weakened
	numReasons
)

var reasonNames = [numReasons]string{
	ReasonNone:            "granted",
	ReasonMappedSource:    "mapped_source",
	ReasonMalformed:       "malformed",
	ReasonProtocolRefused: "protocol_refused",
	ReasonBadMAC1:         "bad_mac1",
	ReasonUndecryptable:   "undecryptable",
	ReasonReplay:          "replay",
	ReasonUntrusted:       "untrusted_certificate",
	ReasonExpired:         "expired",
	ReasonNotYetValid:     "not_yet_valid",
	ReasonRevoked:         "revoked",
	ReasonBadSignature:    "bad_signature",
	ReasonStaleTimestamp:  "stale_timestamp",
	ReasonFutureTimestamp: "future_timestamp",
	ReasonSourceMismatch:  "source_mismatch",
	ReasonNotAuthorized:   "not_authorized",
	ReasonOverload:        "overload",
}

// String returns the reason's stable name, as logged and printed by
// `sknock inspect`.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Authenticated reports whether a knock denied for r was signed by a
// certificate the CA issued, so a log line for it cannot be forced by an
// anonymous flood.
func (r Reason) Authenticated() bool {
	return r >= ReasonStaleTimestamp && r <= ReasonNotAuthorized
}

// Reasons returns every denial reason, for counters and documentation.
func Reasons() []Reason {
	out := make([]Reason, 0, numReasons-1)
	for r := ReasonNone + 1; r < numReasons; r++ {
		out = append(out, r)
	}
	return out
}
