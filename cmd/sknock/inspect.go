package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"strconv"
	"time"

	"sknock/gate"
	"sknock/internal/trustload"
	"sknock/knock"
	"sknock/pki"
)

const inspectUsage = `usage: sknock inspect --pkcs12 SERVER.pfx [--ca FILE] [--crl FILE] [--source IP] [--at UNIXSECONDS] [--tolerance D] PACKETFILE

Decide one captured knock (the UDP payload, raw bytes) exactly as the
gatekeeper would, and print one JSON object: the decoded fields and the
verdict with its reason. Use it to answer "why was my knock refused?".

  --source IP     the datagram's source address (default: the address
                  embedded in the knock, so the source check passes)
  --at SECONDS    the arrival time, Unix seconds (default: now); the
                  timestamp is judged against it. Certificates are judged
                  at the real time.
  --ca, --crl     CA certificates (PEM/DER) and CRL (DER/PEM); default CA:
                  the one inside the server bundle
  --tolerance D   the timestamp tolerance (default 7s, as sknockd's)
The bundle password comes from --password-file FILE or $SKNOCK_PASSWORD.

Exit status: 0 grant, 1 deny, 2 bad flags or unreadable files.

Example:
  sknock inspect --pkcs12 server.pfx --crl ca.crl --source 198.18.0.2 --at 1767225600 knock.bin
`

// minTolerance and maxTolerance bound --tolerance as sknockd bounds
// knock.timestamp_tolerance.
const (
	minTolerance = time.Second
	maxTolerance = 10 * time.Minute
)

// inspectResult is what `sknock inspect` prints.
type inspectResult struct {
	Verdict       string      `json:"verdict"`
	Reason        string      `json:"reason"`
	Detail        string      `json:"detail,omitempty"`
	Proto         string      `json:"proto,omitempty"`
	Port          *uint16     `json:"port,omitempty"`
	ClientIP      string      `json:"client_ip,omitempty"`
	Source        string      `json:"source"`
	Timestamp     *uint32     `json:"timestamp,omitempty"`
	SkewSeconds   *float64    `json:"skew_seconds,omitempty"`
	Serial        json.Number `json:"serial,omitempty"`
	Subject       string      `json:"subject,omitempty"`
	Issuer        string      `json:"issuer,omitempty"`
	Authorization *string     `json:"authorization"`
	NotBefore     string      `json:"not_before,omitempty"`
	NotAfter      string      `json:"not_after,omitempty"`
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		out := stderr
		for _, a := range args {
			if a == "-h" || a == "-help" || a == "--help" {
				out = stdout
			}
		}
		fmt.Fprint(out, inspectUsage)
		fs.SetOutput(out)
		fmt.Fprintln(out, "\nFlags:")
		fs.PrintDefaults()
	}
	bundlePath := fs.String("pkcs12", "", "the gatekeeper's PKCS#12 bundle")
	passwordFile := fs.String("password-file", "", "file whose first line is the bundle password")
	caPath := fs.String("ca", "", "CA certificates (default: the CA in the bundle)")
	crlPath := fs.String("crl", "", "the CA's CRL")
	source := fs.String("source", "", "the datagram's source address")
	at := fs.String("at", "", "arrival time, Unix seconds")
	tolerance := fs.Duration("tolerance", 7*time.Second, "how far the timestamp may be from --at (sknockd's knock.timestamp_tolerance)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sknock inspect: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() != 1 {
		return fail("want exactly one PACKETFILE (see --help)")
	}
	if *bundlePath == "" {
		return fail("--pkcs12 SERVER.pfx is required")
	}
	now := time.Now()
	if *at != "" {
		// A knock's timestamp is 32-bit Unix seconds: no other arrival
		// time can be judged against one.
		secs, err := strconv.ParseUint(*at, 10, 32)
		if err != nil {
			return fail("--at %q: want Unix seconds in 0..%d", *at, uint32(math.MaxUint32))
		}
		now = time.Unix(int64(secs), 0)
	}
	if *tolerance < minTolerance || *tolerance > maxTolerance {
		return fail("--tolerance %s is not in %s..%s", *tolerance, minTolerance, maxTolerance)
	}
	datagram, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return fail("%v", err)
	}
	password, err := bundlePassword(*passwordFile)
	if err != nil {
		return fail("%v", err)
	}
	// The same loader as sknockd's, so the verdict is the daemon's.
	certs, err := trustload.LoadCerts(*bundlePath, password, *caPath)
	if err != nil {
		return fail("%v", err)
	}
	trust, _, err := certs.Trust(*crlPath, *tolerance)
	if err != nil {
		return fail("%v", err)
	}
	var src netip.Addr
	if *source != "" {
		if src, err = netip.ParseAddr(*source); err != nil {
			return fail("--source %q is not an IP address", *source)
		}
	} else {
		src = embeddedAddress(datagram, trust)
	}

	d := gate.Decide(gate.Input{Datagram: datagram, Source: src, Now: now, CertTime: time.Now()}, trust, nil)
	out := describe(d, src)
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(out); err != nil {
		return fail("%v", err)
	}
	if d.Granted() {
		return 0
	}
	return 1
}

// embeddedAddress returns the client address inside the knock, read as
// IPv4 when it is one and as IPv6 otherwise; an unreadable knock gets the
// unspecified IPv4 address (its verdict will say why).
func embeddedAddress(datagram []byte, trust *gate.Trust) netip.Addr {
	if k, err := knock.Open(datagram, trust.ServerKey, false); err == nil {
		return k.ClientIP
	} else if errors.Is(err, knock.ErrClientIP) {
		if k, err := knock.Open(datagram, trust.ServerKey, true); err == nil {
			return k.ClientIP
		}
	}
	return netip.IPv4Unspecified()
}

func describe(d gate.Decision, src netip.Addr) inspectResult {
	out := inspectResult{Verdict: d.Verdict(), Reason: d.Reason.String(), Source: src.String()}
	if d.Err != nil {
		out.Detail = d.Err.Error()
	}
	if k := d.Knock; k != nil {
		out.Proto = k.Proto.String()
		port, ts, skew := k.Port, k.Timestamp, d.Skew.Seconds()
		out.Port, out.Timestamp, out.SkewSeconds = &port, &ts, &skew
		out.ClientIP = k.ClientIP.String()
		// The certificate is described even when it did not verify, so
		// an operator sees whose knock was refused.
		if c, err := x509.ParseCertificate(k.Certificate); err == nil {
			out.Serial = json.Number(c.SerialNumber.String())
			out.Subject = c.Subject.String()
			out.Issuer = c.Issuer.String()
			out.NotBefore = c.NotBefore.UTC().Format(time.RFC3339)
			out.NotAfter = c.NotAfter.UTC().Format(time.RFC3339)
			if a, found, err := pki.AuthorizationFromCertificate(c); err == nil && found {
				s := a.String()
				out.Authorization = &s
			}
		}
	}
	return out
}
