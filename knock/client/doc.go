// Package client is the sknock client library: it seals one knock per
// requested port with a client's PKCS#12 bundle, sends it to the
// gatekeeper's knock port, and, for TCP, verifies that the port opened by
// connecting to it, knocking again when it did not open in time.
//
// A Client is made once (New or Load) and is safe for concurrent use. The
// knock package owns the wire format; this package owns sending, probing and
// retrying. It lives apart from knock because it needs pki, which imports
// knock.
package client
