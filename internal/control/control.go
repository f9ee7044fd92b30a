// Package control is the protocol of sknockd's control socket: one JSON
// request per connection, one JSON response, over a root-only unix
// socket. `sknock grants`, `sknock status` and `sknock reload` are its
// clients (Call); sknockd serves it (Server, on Linux), answering through
// the handler it passes in. It links nothing heavy, and logs nothing
// itself, so the client binary stays small.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// DefaultSocket is where sknockd listens unless control.socket says
// otherwise: in its runtime directory, which only root may enter.
const DefaultSocket = "/run/sknock/control.sock"

// The commands a Request may carry.
const (
	CommandGrants = "grants" // list the live grants
	CommandRevoke = "revoke" // end grants by source, serial or all
	CommandStatus = "status" // the daemon's state and counters
	CommandReload = "reload" // read the configuration file again, now
)

// ReloadTimeout bounds a reload request: a reload may fetch a CRL that
// is not on disk yet (10 s) on top of reading every file.
const ReloadTimeout = 60 * time.Second

// MaxMessage bounds a request or response on the wire; a request larger
// than this is refused, a response is cut at MaxListed grants well
// before it.
const MaxMessage = 64 << 20

// MaxListed is how many grants one listing carries at most; Response.Live
// says how many there are.
const MaxListed = 100000

// Request is what a client asks.
type Request struct {
	// Command is one of the Command constants.
	Command string `json:"command"`
	// Source, Serial and All select the grants a revoke ends; exactly one
	// is set. Serial is decimal, or hexadecimal with a 0x prefix.
	Source string `json:"source,omitempty"`
	Serial string `json:"serial,omitempty"`
	All    bool   `json:"all,omitempty"`
}

// Response is what sknockd answers. Error is set, and nothing else, when
// the request was refused.
type Response struct {
	Error string `json:"error,omitempty"`
	// Grants are the live grants (grants), or those a revoke ended.
	Grants []Grant `json:"grants,omitempty"`
	// Live is how many grants are live; Grants may hold fewer (MaxListed).
	Live int `json:"live,omitempty"`
	// Connections is how many tracked connections a revoke ended.
	Connections int `json:"connections,omitempty"`
	// Status is the answer to status.
	Status *Status `json:"status,omitempty"`
	// Reload is the answer to reload; a refused reload sets Error too,
	// with the same words as the log's.
	Reload *Reload `json:"reload,omitempty"`
}

// Reload is the outcome of one reload, by SIGHUP or over the socket.
type Reload struct {
	// Time is when it ended.
	Time time.Time `json:"time"`
	// Trigger is "SIGHUP" or "sknock reload".
	Trigger string `json:"trigger"`
	// Changed are the configuration keys whose values changed (applied).
	Changed []string `json:"changed,omitempty"`
	// Error says why the file was refused (the key, or the line of a
	// syntax error); empty when it was applied.
	Error string `json:"error,omitempty"`
}

// Grant is one live grant.
type Grant struct {
	Source string `json:"source"`
	Proto  string `json:"proto"`
	Port   uint16 `json:"port"`
	// Subject and Serial name the certificate that made or last extended
	// the grant; empty when sknockd no longer knows it.
	Subject string    `json:"subject,omitempty"`
	Serial  string    `json:"serial,omitempty"`
	Expires time.Time `json:"expires"`
	// SecondsLeft is how long the grant has left when listed.
	SecondsLeft float64 `json:"seconds_left"`
}

// Status is the daemon's state as `sknock status` shows it.
type Status struct {
	Version       string    `json:"version"`
	Config        string    `json:"config"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	// RulesHealthy is false while the rule watcher's last pass left the
	// rule set damaged.
	RulesHealthy bool   `json:"rules_healthy"`
	Policy       string `json:"policy"`
	Protect      string `json:"protect"`
	Grants       int    `json:"grants"`
	Trust        Trust  `json:"trust"`
	// Counters are the daemon's counters by name, as SIGUSR1 logs them.
	Counters map[string]uint64 `json:"counters"`
	// LastReload is the last reload's outcome; nil before the first.
	LastReload *Reload `json:"last_reload,omitempty"`
}

// Trust is the trust state in force.
type Trust struct {
	// Server is the server certificate's subject, ServerNotAfter its end.
	Server         string    `json:"server,omitempty"`
	ServerNotAfter time.Time `json:"server_not_after,omitzero"`
	// CAs are the subjects of the CA certificates trusted.
	CAs []string `json:"cas,omitempty"`
	// CRL is false when no CRL is loaded (revocation is off). The CRL*
	// fields describe the CRL the verifier applies (several CRLs are
	// combined into one); CRLs lists each.
	CRL           bool        `json:"crl"`
	CRLIssuer     string      `json:"crl_issuer,omitempty"`
	CRLRevoked    int         `json:"crl_revoked"`
	CRLThisUpdate time.Time   `json:"crl_this_update,omitzero"`
	CRLNextUpdate time.Time   `json:"crl_next_update,omitzero"`
	CRLStale      bool        `json:"crl_stale"`
	CRLs          []CRLStatus `json:"crls,omitempty"`
	ToleranceSecs float64     `json:"timestamp_tolerance_seconds"`
	// Warnings are sknockd's warnings about the trust state (no CRL, a
	// stale one, certificates near expiry), as it logs them hourly.
	Warnings []Warning `json:"warnings,omitempty"`
}

// CRLStatus is one CRL applied.
type CRLStatus struct {
	File       string    `json:"file"`
	Issuer     string    `json:"issuer"`
	Revoked    int       `json:"revoked"`
	ThisUpdate time.Time `json:"this_update,omitzero"`
	NextUpdate time.Time `json:"next_update,omitzero"`
}

// Warning is one way the protection is weaker than it looks.
type Warning struct {
	Check string `json:"check"`
	Text  string `json:"text"`
}

// ErrRefused wraps the error a daemon answered with.
var ErrRefused = errors.New("sknockd refused")

// Call sends req to the control socket at path and returns the answer,
// within timeout. Errors name the socket.
func Call(path string, req Request, timeout time.Duration) (Response, error) {
	conn, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return Response{}, fmt.Errorf("control socket %s: %w%s", path, err, dialHint(err))
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return Response{}, fmt.Errorf("control socket %s: send: %w", path, err)
	}
	var resp Response
	if err := json.NewDecoder(&limitReader{r: conn, n: MaxMessage}).Decode(&resp); err != nil {
		return Response{}, fmt.Errorf("control socket %s: read the answer: %w", path, err)
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	return resp, nil
}

// dialHint says what a failed connection to the socket most likely means.
func dialHint(err error) string {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return " (no socket there: sknockd is not running, or listens where its control.socket says: give --config FILE or --socket PATH)"
	case errors.Is(err, syscall.ECONNREFUSED):
		return " (nothing answers there: sknockd is not running; systemctl status sknockd)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		if os.Geteuid() != 0 {
			return " (the control socket is root's: run as root)"
		}
	}
	return ""
}

// ReadRequest reads one request of at most MaxMessage bytes from conn.
func ReadRequest(conn net.Conn) (Request, error) {
	var req Request
	dec := json.NewDecoder(&limitReader{r: conn, n: MaxMessage})
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("read request: %w", err)
	}
	return req, nil
}

// WriteResponse writes resp to conn.
func WriteResponse(conn net.Conn, resp Response) error {
	return json.NewEncoder(conn).Encode(resp)
}

// limitReader is io.LimitReader with an error at the limit rather than
// an end of file that a decoder would report as a truncated message.
type limitReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("message longer than %d bytes", MaxMessage)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}
