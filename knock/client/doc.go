// Package client is the sknock client library: it seals a knock for the
// requested ports with a client's PKCS#12 bundle (wire format v2: one
// knock for up to 16 ports, the default; v1: one knock per port, for
// original sKnock servers; Config.Protocol chooses), sends it to the
// gatekeeper's knock port, and, for TCP, verifies that the port opened by
// connecting to it, knocking again when it did not open in time.
//
// A Client is made once (New or Load) and is safe for concurrent use. The
// knock package owns the wire format; this package owns sending, probing and
// retrying. It lives apart from knock because it needs pki, which imports
// knock.
package client
