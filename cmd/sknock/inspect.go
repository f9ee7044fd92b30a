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
	"strings"
	"time"

	"sknock/gate"
	"sknock/internal/capture"
	"sknock/internal/trustload"
	"sknock/knock"
	"sknock/pki"
)

const inspectUsage = `usage: sknock inspect --pkcs12 SERVER.pfx [--ca FILE] [--crl FILE] [--at UNIXSECONDS] [--tolerance D]
                      [--ports FIRST:LAST] [--min-length N] [--frame N] [--source IP] FILE

Decide captured knocks exactly as the gatekeeper would, and print one JSON
object per knock: the decoded fields and the verdict with its reason. Use
it to answer "why was my knock refused?".

FILE is a capture (pcap or pcapng, as tcpdump -w writes) or one knock's
UDP payload, raw bytes. In a capture, every UDP datagram to the knock
ports of at least --min-length bytes is a knock (what sknockd's rules pass
to it), judged at its capture time, from its captured source address, in
order (a repeated datagram is a replay, as for sknockd). A raw payload is
judged at its own timestamp unless --at is given, so that the time of the
inspection never hides the real reason. Both wire formats are read: a v2
knock shows every port it requests ("requests") and its chain, and a v2
datagram whose mac1 is wrong is refused as bad_mac1, as sknockd refuses
it, without being opened.

  --at SECONDS    judge the timestamps as of this time, Unix seconds
                  (default: each datagram's capture time; for a raw
                  payload, its own timestamp)
  --frame N       only the datagram in frame N of the capture (as tcpdump
                  -# and Wireshark number them)
  --ports F:L     the knock ports, as sknockd's knock.ports (default 10000:60000)
  --min-length N  as sknockd's knock.min_length (default 300)
  --source IP     a raw payload's source address (default: the address
                  embedded in the knock, so the source check passes)
  --ca, --crl     CA certificates (PEM/DER; roots and intermediates) and
                  CRL (DER/PEM; repeat --crl for one per CA); default CA:
                  the one inside the server bundle. The CRL is the one
                  given, whatever the capture's time.
  --tolerance D   the timestamp tolerance (default 7s, as sknockd's)
The bundle password comes from --password-file FILE or $SKNOCK_PASSWORD, else
it is asked for on the terminal.

Exit status: 0 every knock granted, 1 some denied, 2 bad flags,
unreadable files, or no knock in the capture.

Examples:
  tcpdump -i eth0 -w knocks.pcap 'udp dst portrange 10000-60000'
  sknock inspect --pkcs12 server.pfx --crl ca.crl knocks.pcap
  sknock inspect --pkcs12 server.pfx --crl ca.crl --source 198.18.0.2 knock.bin
`

// minTolerance and maxTolerance bound --tolerance as sknockd bounds
// knock.timestamp_tolerance.
const (
	minTolerance = time.Second
	maxTolerance = 10 * time.Minute
)

// Where a knock's judging time came from (inspectResult.TimeFrom).
const (
	timeFromCapture = "capture"
	timeFromKnock   = "knock_timestamp"
	timeFromFlag    = "--at"
	timeFromNow     = "now" // a capture without timestamps
)

// inspectResult is what `sknock inspect` prints for each knock.
type inspectResult struct {
	Frame         int      `json:"frame,omitempty"`
	Verdict       string   `json:"verdict"`
	Reason        string   `json:"reason"`
	Detail        string   `json:"detail,omitempty"`
	Time          string   `json:"time"`
	TimeFrom      string   `json:"time_from"`
	Protocol      int      `json:"protocol,omitempty"`
	Requests      []string `json:"requests,omitempty"`
	Proto         string   `json:"proto,omitempty"`
	Port          *uint16  `json:"port,omitempty"`
	ClientIP      string   `json:"client_ip,omitempty"`
	Source        string   `json:"source"`
	Destination   string   `json:"destination,omitempty"`
	Timestamp     *uint32  `json:"timestamp,omitempty"`
	TimestampMS   *uint64  `json:"timestamp_ms,omitempty"`
	Chain         []string `json:"chain,omitempty"`
	SkewSeconds   *float64 `json:"skew_seconds,omitempty"`
	Serial        string   `json:"serial,omitempty"`
	Subject       string   `json:"subject,omitempty"`
	Issuer        string   `json:"issuer,omitempty"`
	Authorization *string  `json:"authorization"`
	NotBefore     string   `json:"not_before,omitempty"`
	NotAfter      string   `json:"not_after,omitempty"`
}

// inspectFlags are the command line of `sknock inspect`.
type inspectFlags struct {
	bundle, passwordFile, ca, source string
	crls                             []string
	at                               *time.Time
	tolerance                        time.Duration
	firstPort, lastPort              uint16
	minLength, frame                 int
	file                             string
}

// errFlagPrinted is a bad flag that package flag has reported already.
var errFlagPrinted = errors.New("bad flag")

func parseInspectFlags(args []string, stdout, stderr io.Writer) (*inspectFlags, error) {
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
	f := &inspectFlags{}
	fs.StringVar(&f.bundle, "pkcs12", "", "the gatekeeper's PKCS#12 bundle")
	fs.StringVar(&f.passwordFile, "password-file", "", "file whose first line is the bundle password")
	fs.StringVar(&f.ca, "ca", "", "CA certificates (default: the CA in the bundle)")
	fs.Func("crl", "a CA's CRL; repeat it for the CRLs of several CAs (as sknockd's crl.file and crl.extra)", func(s string) error {
		f.crls = append(f.crls, s)
		return nil
	})
	fs.StringVar(&f.source, "source", "", "a raw payload's source address")
	at := fs.String("at", "", "judge the timestamps as of this time, Unix seconds")
	fs.DurationVar(&f.tolerance, "tolerance", 7*time.Second, "how far the timestamp may be from the judging time (sknockd's knock.timestamp_tolerance)")
	ports := fs.String("ports", "10000:60000", "the knock ports, FIRST:LAST (sknockd's knock.ports)")
	fs.IntVar(&f.minLength, "min-length", 300, "smallest knock payload, bytes (sknockd's knock.min_length)")
	fs.IntVar(&f.frame, "frame", 0, "only the datagram in this frame of the capture (from 1)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, errFlagPrinted // flag printed it, with the usage
	}
	if fs.NArg() != 1 {
		return nil, errors.New("want exactly one FILE, a capture or a raw knock payload (see --help)")
	}
	f.file = fs.Arg(0)
	if f.bundle == "" {
		return nil, errors.New("--pkcs12 SERVER.pfx is required")
	}
	if *at != "" {
		// A knock's timestamp is 32-bit Unix seconds: no other arrival
		// time can be judged against one.
		secs, err := strconv.ParseUint(*at, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--at %q: want Unix seconds in 0..%d", *at, uint32(math.MaxUint32))
		}
		t := time.Unix(int64(secs), 0)
		f.at = &t
	}
	if f.tolerance < minTolerance || f.tolerance > maxTolerance {
		return nil, fmt.Errorf("--tolerance %s is not in %s..%s", f.tolerance, minTolerance, maxTolerance)
	}
	first, last, ok := strings.Cut(*ports, ":")
	if !ok {
		last = first
	}
	lo, err1 := strconv.ParseUint(first, 10, 16)
	hi, err2 := strconv.ParseUint(last, 10, 16)
	if err1 != nil || err2 != nil || lo == 0 || lo > hi {
		return nil, fmt.Errorf("--ports %q: want FIRST:LAST, e.g. 10000:60000", *ports)
	}
	f.firstPort, f.lastPort = uint16(lo), uint16(hi)
	if f.minLength < 0 || f.minLength > 65487 {
		return nil, fmt.Errorf("--min-length %d is not in 0..65487", f.minLength)
	}
	if f.frame < 0 {
		return nil, fmt.Errorf("--frame %d: frames count from 1", f.frame)
	}
	return f, nil
}

func runInspect(args []string, stdout, stderr io.Writer) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sknock inspect: "+format+"\n", a...)
		return 2
	}
	f, err := parseInspectFlags(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errFlagPrinted) {
		return 2
	}
	if err != nil {
		return fail("%v", err)
	}
	data, err := os.ReadFile(f.file)
	if err != nil {
		return fail("%v", err)
	}
	password, err := bundlePassword(f.passwordFile)
	if err != nil {
		return fail("%v", err)
	}
	// The same loader as sknockd's, so the verdict is the daemon's.
	certs, err := trustload.LoadCerts(f.bundle, password, f.ca)
	if err != nil {
		return fail("%v", err)
	}
	var crls []*pki.CRL
	for _, path := range f.crls {
		crl, err := pki.LoadCRL(path, certs.CAs)
		if err != nil {
			return fail("%v", err)
		}
		crls = append(crls, crl)
	}
	trust, err := certs.TrustCRL(pki.Combine(crls...), f.tolerance)
	if err != nil {
		return fail("%v", err)
	}
	var results []inspectResult
	if capture.Is(data) {
		if f.source != "" {
			return fail("--source is for a raw payload; a capture has each datagram's source")
		}
		if results, err = inspectCapture(data, f, trust, stderr); err != nil {
			return fail("%s: %v", f.file, err)
		}
	} else {
		if f.frame != 0 {
			return fail("--frame is for a capture; %s is not a pcap or pcapng file (read as a raw payload)", f.file)
		}
		r, err := inspectRaw(data, f, trust)
		if err != nil {
			return fail("%v", err)
		}
		results = []inspectResult{r}
	}
	enc := json.NewEncoder(stdout)
	code := 0
	for _, r := range results {
		if err := enc.Encode(r); err != nil {
			return fail("%v", err)
		}
		if r.Verdict != "grant" {
			code = 1
		}
	}
	return code
}

// inspectRaw judges one knock payload: from --source or its embedded
// address, at --at or at its own timestamp; its certificate at the real
// time.
func inspectRaw(datagram []byte, f *inspectFlags, trust *gate.Trust) (inspectResult, error) {
	claimed, sealed, opened := openAnyVersion(datagram, trust)
	var src netip.Addr
	switch {
	case f.source != "":
		var err error
		if src, err = netip.ParseAddr(f.source); err != nil {
			return inspectResult{}, fmt.Errorf("--source %q is not an IP address", f.source)
		}
	case opened:
		src = claimed
	default:
		src = netip.IPv4Unspecified() // unreadable: its verdict says why
	}
	now, from := time.Now(), timeFromKnock
	switch {
	case f.at != nil:
		now, from = *f.at, timeFromFlag
	case opened:
		now = sealed
	}
	d := gate.Decide(gate.Input{Datagram: datagram, Source: src, Now: now, CertTime: time.Now()}, trust, nil)
	out := describe(d, src)
	out.Time, out.TimeFrom = now.UTC().Format(time.RFC3339), from
	return out, nil
}

// inspectCapture judges the knocks of a capture in order, each at its
// capture time (or --at) from its captured source, with one replay
// memory as sknockd has.
func inspectCapture(data []byte, f *inspectFlags, trust *gate.Trust, stderr io.Writer) ([]inspectResult, error) {
	datagrams, st, err := capture.Read(data)
	if err != nil && len(datagrams) == 0 {
		return nil, err
	}
	if err != nil {
		fmt.Fprintf(stderr, "sknock inspect: warning: %v; judging the %d datagrams before it\n", err, len(datagrams))
	}
	seen := gate.NewReplayCache(1 << 16)
	var out []inspectResult
	skipped := 0
	for _, dg := range datagrams {
		if f.frame != 0 && dg.Frame != f.frame {
			continue
		}
		if port := dg.Dst.Port(); port < f.firstPort || port > f.lastPort || len(dg.Payload) < f.minLength && !dg.Truncated {
			skipped++
			continue
		}
		now, from := dg.Time, timeFromCapture
		switch {
		case f.at != nil:
			now, from = *f.at, timeFromFlag
		case now.IsZero():
			now, from = time.Now(), timeFromNow
		}
		src := dg.Src.Addr()
		r := inspectResult{}
		if dg.Truncated {
			r = inspectResult{Verdict: "unknown", Reason: "truncated_capture", Source: src.String(),
				Detail: "the capture holds only part of this datagram: capture again with tcpdump -s 0"}
		} else {
			d := gate.Decide(gate.Input{Datagram: dg.Payload, Source: src, Now: now}, trust, seen)
			if sealed, ok := d.SealedAt(); d.Granted() || d.Remember && ok {
				seen.Add(d.ReplayKey, gate.ReplayExpiry(sealed, now, trust.Tolerance), now)
			}
			r = describe(d, src)
		}
		r.Frame, r.Destination = dg.Frame, dg.Dst.String()
		r.Time, r.TimeFrom = now.UTC().Format(time.RFC3339Nano), from
		out = append(out, r)
	}
	if len(out) == 0 {
		what := fmt.Sprintf("no UDP datagram of %d bytes or more to ports %d:%d", f.minLength, f.firstPort, f.lastPort)
		if f.frame != 0 {
			what = fmt.Sprintf("frame %d is no UDP datagram of %d bytes or more to ports %d:%d", f.frame, f.minLength, f.firstPort, f.lastPort)
		}
		return nil, fmt.Errorf("%s among %d frames (%d UDP datagrams, %d IP fragments not reassembled)", what, st.Frames, len(datagrams), st.Fragments)
	}
	return out, nil
}

// openAnyVersion opens a v1 or v2 knock and returns the client address
// it claims and its timestamp; opened is false when it does not open.
func openAnyVersion(datagram []byte, trust *gate.Trust) (claimed netip.Addr, sealed time.Time, opened bool) {
	if knock.Version(datagram) == 2 {
		if trust.Opener == nil {
			return netip.Addr{}, time.Time{}, false
		}
		k, err := trust.Opener.OpenV2(datagram)
		if err != nil {
			return netip.Addr{}, time.Time{}, false
		}
		return k.ClientIP, k.Time(), true
	}
	if k := openAnyFamily(datagram, trust); k != nil {
		return k.ClientIP, k.Time(), true
	}
	return netip.Addr{}, time.Time{}, false
}

// openAnyFamily opens the v1 knock, reading its client address as IPv4
// when it is one and as IPv6 otherwise; nil when it does not open.
func openAnyFamily(datagram []byte, trust *gate.Trust) *knock.Knock {
	k, err := knock.Open(datagram, trust.ServerKey, false)
	if err == nil {
		return k
	}
	if errors.Is(err, knock.ErrClientIP) {
		if k, err := knock.Open(datagram, trust.ServerKey, true); err == nil {
			return k
		}
	}
	return nil
}

func describe(d gate.Decision, src netip.Addr) inspectResult {
	out := inspectResult{Verdict: d.Verdict(), Reason: d.Reason.String(), Source: src.String()}
	if d.Err != nil {
		out.Detail = d.Err.Error()
	}
	if d.Version != 0 {
		out.Protocol = d.Version
	}
	var certDER []byte
	if k := d.Knock; k != nil {
		out.Proto = k.Proto.String()
		port, ts, skew := k.Port, k.Timestamp, d.Skew.Seconds()
		out.Port, out.Timestamp, out.SkewSeconds = &port, &ts, &skew
		out.ClientIP = k.ClientIP.String()
		certDER = k.Certificate
	}
	if k := d.KnockV2; k != nil {
		for _, r := range k.Requests {
			out.Requests = append(out.Requests, fmt.Sprintf("%s/%d", r.Proto, r.Port))
		}
		if len(k.Requests) == 1 { // the fields a v1 knock has, for scripts
			out.Proto = k.Requests[0].Proto.String()
			port := k.Requests[0].Port
			out.Port = &port
		}
		ts, skew := k.TimestampMillis, d.Skew.Seconds()
		out.TimestampMS, out.SkewSeconds = &ts, &skew
		out.ClientIP = k.ClientIP.String()
		for _, der := range k.Chain {
			if c, err := x509.ParseCertificate(der); err == nil {
				out.Chain = append(out.Chain, c.Subject.String())
			} else {
				out.Chain = append(out.Chain, "(unparsable certificate)")
			}
		}
		certDER = k.Chain[0]
	}
	if certDER != nil {
		// The certificate is described even when it did not verify, so
		// an operator sees whose knock was refused.
		if c, err := x509.ParseCertificate(certDER); err == nil {
			// A string, as in sknockd's log: a 128-bit serial is no
			// JSON number a tool reads exactly.
			out.Serial = c.SerialNumber.String()
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
