package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"sknock/knock/client"
	"sknock/knock/client/addrecho"
	"sknock/packet"
)

const knockUsage = `usage: sknock knock [flags] HOST [PROTO/PORT[,PROTO/PORT...]...]
       sknock knock --connect [flags] HOST tcp/PORT

Send a signed, encrypted knock for the PROTO/PORTs (tcp/22, udp/8000) to
HOST's gatekeeper, then verify every TCP port by connecting to it, knocking
again when a port is not open within --timeout. UDP ports cannot be
verified. Knocks use wire format v2 by default, one knock for up to 16
ports; --protocol 1 (or the profile's protocol: 1) sends the original
sKnock format, one knock per port, for original sKnock servers.
The bundle password comes from --password-file or $SKNOCK_PASSWORD, else
it is asked for on the terminal (never when stdin is not one: a
ProxyCommand's is the connection). Unlocking the bundle costs about 2 ms; --key-cache 1h keeps it unlocked in
the kernel's per-user keyring for an hour (Linux only; purge: keyctl purge
-p user sknock:).

HOST may name a profile in ~/.config/sknock/config.yaml (--profile-file):
its bundle, server certificate, password source, ports and so on, which
flags override. Without ports on the command line, the profile's are
knocked.

Behind NAT the knock must carry the public address: --source-ip auto asks
an HTTPS endpoint that echoes the caller's address (--address-url, default
https://icanhazip.com/, its certificate checked against the system's
roots; no proxy is used), and is the default when the local address toward
HOST is private, shared or link-local and HOST's is not. --stun HOST:PORT
(repeatable) asks plain STUN servers instead, whose answers an attacker on
the path can forge. --source-ip local embeds the local address;
--source-ip IP that IP.

A name with IPv4 and IPv6 addresses is knocked on the one the resolver
prefers, then on the other when the port did not open within 300 ms;
-4 or -6 forces one.

With --connect (exactly one TCP port) the verified connection is spliced to
stdin and stdout, for use as an ssh ProxyCommand; messages go to stderr.

Exit status: 0 when every port is open (UDP, or --no-verify: knocked),
1 when a port failed, 2 for bad flags, unreadable or unsuitable files or a
wrong password, 3 when a port was already open to this client's address
before the knock (another grant to the same address, e.g. a neighbour
behind one NAT address: the knock's own verdict is then in the
gatekeeper's log).

Examples:
  sknock knock --pkcs12 me.pfx --server-cert server.pem gate.example.net tcp/2000 udp/8000
  sknock knock gate1
  ssh -o ProxyCommand='sknock knock --connect %h tcp/%p' gate1

Flags:
`

// testInternalEnv names prefixes (space-separated) the client treats as
// private when choosing the source address; only tests set it.
const testInternalEnv = "SKNOCK_TEST_INTERNAL_PREFIXES"

// maxKeyCache bounds --key-cache: an unlocked key should not outlive a
// working day.
const maxKeyCache = 24 * time.Hour

// maxRetries and maxTimeout bound --retries and --timeout, so that a typo
// cannot make a knock wait for days: (maxRetries+1) × maxTimeout is at
// most a day.
const (
	maxRetries = 100
	maxTimeout = 10 * time.Minute
)

// knockFlags is the parsed command line of "sknock knock".
type knockFlags struct {
	bundle, serverCert, passwordFile string
	passwordEnv                      string // from a profile
	knockPort                        int
	sourceIP                         string
	stun                             []string
	addressURL                       string
	profileFile                      string
	ipv4, ipv6                       bool
	noVerify, connect, quiet         bool
	retries                          int
	protocol                         int
	timeout, keyCache                time.Duration

	host    string
	profile *profile // nil when HOST names none
	reqs    []client.Request
}

// parseKnockFlags parses args; flags may come before or after HOST and
// the ports. A usageError is a mistake on the command line.
func parseKnockFlags(args []string, stdout io.Writer) (*knockFlags, error) {
	var f knockFlags
	fs := flag.NewFlagSet("sknock knock", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fs.StringVar(&f.bundle, "pkcs12", "", "the client's PKCS#12 bundle (required, unless HOST's profile names it)")
	fs.StringVar(&f.serverCert, "server-cert", "", "the gatekeeper's certificate, DER or PEM (required, unless HOST's profile names it)")
	fs.StringVar(&f.passwordFile, "password-file", "", "file whose first line is the bundle password (default: $"+passwordEnv+")")
	fs.IntVar(&f.knockPort, "knock-port", 0, "UDP port to knock on (default: random in 10000-60000)")
	fs.StringVar(&f.sourceIP, "source-ip", "", "client address to embed: auto (the public address, asked of the address echo, or of STUN with --stun), local (the address toward HOST) or an IP (default: auto when the local address toward HOST is private and HOST's is not, else local)")
	fs.StringVar(&f.addressURL, "address-url", "", "HTTPS endpoint that echoes the caller's address, asked for the public address (default: the profile's, else "+addrecho.DefaultURL+")")
	fs.Func("stun", "learn the public address from this plain STUN server HOST:PORT instead, repeatable (unauthenticated: an attacker on the path can forge the answer; default: the profile's)", func(s string) error {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("want HOST:PORT, got %q", s)
		}
		f.stun = append(f.stun, s)
		return nil
	})
	fs.StringVar(&f.profileFile, "profile-file", "", profileFileHelp)
	fs.BoolVar(&f.ipv4, "4", false, "use IPv4 only")
	fs.BoolVar(&f.ipv6, "6", false, "use IPv6 only")
	fs.BoolVar(&f.noVerify, "no-verify", false, "send the knocks, do not connect to TCP ports")
	fs.BoolVar(&f.connect, "connect", false, "splice stdin/stdout to the verified TCP port (ssh ProxyCommand)")
	fs.BoolVar(&f.quiet, "quiet", false, "print only failures")
	fs.BoolVar(&f.quiet, "q", false, "short for --quiet")
	fs.IntVar(&f.protocol, "protocol", 2, "knock wire format: 2, or 1 for original sKnock servers (default: the profile's, else 2)")
	fs.IntVar(&f.retries, "retries", client.DefaultRetries, "how many times to knock again when a TCP port did not open (at most 100)")
	fs.DurationVar(&f.timeout, "timeout", client.DefaultTimeout, "how long each knock waits for its TCP port (at most 10m)")
	fs.DurationVar(&f.keyCache, "key-cache", 0, "keep the unlocked bundle in the kernel's per-user keyring this long (at most 24h), so later knocks skip the password derivation; any process of yours can use the key meanwhile, as with ssh-agent (default: off)")

	var positional []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				io.WriteString(stdout, knockUsage)
				fs.SetOutput(stdout)
				fs.PrintDefaults()
				return nil, err
			}
			return nil, usageError{msg: err.Error()}
		}
		rest = fs.Args()
		if len(rest) == 0 {
			break
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		rest = rest[1:]
	}
	if len(positional) < 1 {
		return nil, usagef("want HOST and at least one PROTO/PORT")
	}
	f.host = positional[0]
	if err := f.applyProfile(fs); err != nil {
		return nil, err
	}
	ports := positional[1:]
	if len(ports) == 0 && f.profile != nil {
		ports = f.profile.Ports
	}
	switch {
	case len(ports) == 0:
		return nil, usagef("want HOST and at least one PROTO/PORT")
	case f.bundle == "":
		return nil, usagef("--pkcs12 FILE is required (or a profile for %s with pkcs12:)", f.host)
	case f.serverCert == "":
		return nil, usagef("--server-cert FILE is required (or a profile for %s with server_cert:)", f.host)
	case f.ipv4 && f.ipv6:
		return nil, usagef("-4 and -6 exclude each other")
	case f.knockPort < 0 || f.knockPort > 65535:
		return nil, usagef("--knock-port %d is not in 0..65535 (0: random)", f.knockPort)
	case f.retries < 0 || f.retries > maxRetries:
		return nil, usagef("--retries %d is not in 0..%d", f.retries, maxRetries)
	case f.timeout <= 0 || f.timeout > maxTimeout:
		return nil, usagef("--timeout must be positive and at most %s, got %s", maxTimeout, f.timeout)
	case f.protocol != 1 && f.protocol != 2:
		return nil, usagef("--protocol %d is not 1 or 2", f.protocol)
	case f.keyCache < 0 || f.keyCache > maxKeyCache:
		return nil, usagef("--key-cache must be between 0 and %s, got %s", maxKeyCache, f.keyCache)
	}
	if _, _, err := parseSourceIP(f.sourceIP); err != nil {
		return nil, usagef("--source-ip: %v", err)
	}
	for _, arg := range ports {
		for _, one := range strings.Split(arg, ",") {
			req, err := client.ParseRequest(one)
			if err != nil {
				return nil, usageError{msg: err.Error()}
			}
			f.reqs = append(f.reqs, req)
		}
	}
	if f.connect && (len(f.reqs) != 1 || f.reqs[0].Proto != packet.TCP) {
		return nil, usagef("--connect wants exactly one tcp/PORT")
	}
	return &f, nil
}

// applyProfile fills in what the command line left unset from HOST's
// profile, if the profiles file has one; flags set on the command line
// win. An unreadable or invalid profiles file is a usage error.
func (f *knockFlags) applyProfile(fs *flag.FlagSet) error {
	path, explicit := f.profileFile, f.profileFile != ""
	if !explicit {
		path = defaultProfilePath()
	}
	pf, err := loadProfiles(path, explicit)
	if err != nil {
		return usageError{msg: err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	p := pf.find(f.host)
	if len(f.stun) == 0 {
		f.stun = pf.STUN
	}
	if f.addressURL == "" {
		f.addressURL = pf.AddressURL
	}
	if p == nil {
		return nil
	}
	f.profile = p
	if p.Address != "" {
		f.host = p.Address
	}
	str := func(flagName string, dst *string, v string) {
		if !set[flagName] && v != "" {
			*dst = v
		}
	}
	str("pkcs12", &f.bundle, p.PKCS12)
	str("server-cert", &f.serverCert, p.ServerCert)
	str("source-ip", &f.sourceIP, p.SourceIP)
	str("address-url", &f.addressURL, p.AddressURL)
	if !set["password-file"] {
		f.passwordFile, f.passwordEnv = p.PasswordFile, p.PasswordEnv
	}
	if !set["protocol"] && p.Protocol != 0 {
		f.protocol = p.Protocol
	}
	if !set["knock-port"] && p.KnockPort != 0 {
		f.knockPort = p.KnockPort
	}
	if !set["key-cache"] && p.keyCache != 0 {
		f.keyCache = p.keyCache
	}
	if !set["stun"] && len(p.STUN) > 0 {
		f.stun = p.STUN
	}
	if !set["4"] && !set["6"] {
		f.ipv4, f.ipv6 = p.Family == "ipv4", p.Family == "ipv6"
	}
	return nil
}

// parseSourceIP reads --source-ip: "" (the default), auto, local or an
// address.
func parseSourceIP(s string) (client.SourceMode, netip.Addr, error) {
	switch s {
	case "":
		return client.SourceDefault, netip.Addr{}, nil
	case "auto":
		return client.SourceAuto, netip.Addr{}, nil
	case "local":
		return client.SourceLocal, netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return 0, netip.Addr{}, fmt.Errorf("%q is not auto, local or an IP address", s)
	}
	return client.SourceAuto, a, nil
}

// config turns the flags into a client.Config.
func (f *knockFlags) config() (*client.Config, error) {
	cfg := &client.Config{
		KnockPort: uint16(f.knockPort),
		Retries:   f.retries,
		Timeout:   f.timeout,
		NoVerify:  f.noVerify,
		KeyCache:  f.keyCache,
		Protocol:  f.protocol,
	}
	if f.retries == 0 {
		cfg.Retries = -1 // the flag's 0 means a single knock
	}
	switch {
	case f.ipv4:
		cfg.Network = "ip4"
	case f.ipv6:
		cfg.Network = "ip6"
	}
	mode, addr, err := parseSourceIP(f.sourceIP)
	if err != nil {
		return nil, usagef("--source-ip: %v", err)
	}
	cfg.Source, cfg.SourceIP, cfg.STUNServers = mode, addr, f.stun
	cfg.AddressURL = f.addressURL
	if f.profile != nil {
		cfg.CRLURL = f.profile.CRLURL
	}
	if len(f.stun) > 0 { // STUN on request, and the request means use it
		cfg.UseSTUN = true
		if f.sourceIP == "" {
			cfg.Source = client.SourceAuto
		}
	}
	// For the integration tests only, whose addresses all come from a
	// range that is not private: prefixes to take for a private LAN.
	for _, text := range strings.Fields(os.Getenv(testInternalEnv)) {
		if p, err := netip.ParsePrefix(text); err == nil {
			cfg.InternalPrefixes = append(cfg.InternalPrefixes, p)
		}
	}
	return cfg, nil
}

// runKnock runs "sknock knock ARGS...". stdin is read only with --connect.
func runKnock(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f, err := parseKnockFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "sknock knock: %s (see 'sknock knock -h')\n", oneLine(err.Error()))
		return exitUsage
	}
	ctx := context.Background()
	if f.connect {
		// An interrupt ends the splice like a remote close. Without
		// --connect it ends the process at once, the default: there is
		// nothing to close, and not starting the signal machinery saves
		// 0.1-0.2 ms of a knock here.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt)
		defer stop()
	}
	if len(f.stun) > 0 && (f.sourceIP == "" || f.sourceIP == "auto") {
		fmt.Fprintln(stderr, "sknock knock: warning: the public address comes from plain STUN (--stun, or the profile's stun), whose answers are not authenticated: an attacker on this network's path can forge them; the gatekeeper then refuses the knock. Without --stun the address comes from an HTTPS endpoint (--address-url).")
	}
	if f.keyCache > 0 && !client.KeyCacheSupported {
		fmt.Fprintf(stderr, "sknock knock: --key-cache: no kernel keyring on %s; the bundle is unlocked on every knock\n", runtime.GOOS)
	}
	c, err := loadKnockClient(f)
	if err != nil {
		fmt.Fprintf(stderr, "sknock knock: %s\n", oneLine(err.Error()))
		return exitUsage
	}
	if f.connect {
		return knockConnect(ctx, c, f, stdin, stdout, stderr)
	}
	results, err := c.Knock(ctx, f.host, f.reqs...)
	if results == nil && err != nil {
		fmt.Fprintf(stderr, "sknock knock: %s\n", oneLine(err.Error()))
		return exitFailure
	}
	code := exitOK
	notOpen := false
	for _, r := range results {
		if r.Status == client.StatusFailed {
			code = exitFailure
			fmt.Fprintf(stderr, "sknock knock: %s\n", oneLine(r.Err.Error()))
			notOpen = notOpen || errors.Is(r.Err, client.ErrNotOpen)
			continue
		}
		if r.Status == client.StatusAlreadyOpen {
			if code == exitOK {
				code = exitAlreadyOpen
			}
			fmt.Fprintf(stderr, "sknock knock: %s\n", alreadyOpen(r))
			continue
		}
		if !f.quiet {
			line := describeResult(r)
			if _, err := netip.ParseAddr(strings.Trim(f.host, "[]")); err != nil && r.Addr.IsValid() {
				line += " on " + r.Addr.String()
			}
			fmt.Fprintln(stdout, line)
		}
	}
	if notOpen {
		printProtocolHint(stderr, c, f.host)
	}
	return code
}

// printProtocolHint says, after a v2 knock that did not open a port, that
// the host may speak only v1: an original sKnock server, or an sknockd
// with knock.protocols: [1]. The client never falls back by itself.
func printProtocolHint(stderr io.Writer, c *client.Client, host string) {
	if c.Protocol() != 2 {
		return
	}
	fmt.Fprintf(stderr, "sknock knock: the knock used wire format v2; if %s runs an original sKnock server or an sknockd with knock.protocols: [1], try --protocol 1\n", host)
}

// loadKnockClient reads the password, bundle and server certificate.
func loadKnockClient(f *knockFlags) (*client.Client, error) {
	cfg, err := f.config()
	if err != nil {
		return nil, err
	}
	var password string
	if f.passwordFile == "" && f.passwordEnv != "" {
		password = os.Getenv(f.passwordEnv)
		if password == "" {
			return nil, usagef("no bundle password: the profile's password_env %s is not set or empty", f.passwordEnv)
		}
	} else if password, err = bundlePassword(f.passwordFile); err != nil {
		return nil, err
	}
	return client.Load(f.bundle, password, f.serverCert, cfg)
}

// alreadyOpen is the line for a port that was open to this client's
// address before its knock: someone else's grant (a neighbour behind the
// same NAT address) is never presented as this knock's success.
func alreadyOpen(r client.Result) string {
	return fmt.Sprintf("%s was already open to %s; this knock's own verdict is in the gatekeeper's log", r.Request, r.Embedded)
}

// describeResult is the line printed for a port that did not fail.
func describeResult(r client.Result) string {
	switch {
	case r.Status == client.StatusOpen:
		return fmt.Sprintf("%s open (verified in %s)", r.Request, roundDuration(r.Elapsed))
	case r.Request.Proto == packet.UDP:
		return fmt.Sprintf("%s knocked (UDP cannot be verified)", r.Request)
	}
	return fmt.Sprintf("%s knocked (not verified)", r.Request)
}

// roundDuration keeps three significant digits or so: 3.2ms, 41ms, 1.2s.
func roundDuration(d time.Duration) time.Duration {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond)
	case d < 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d < time.Second:
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}

// knockConnect knocks, then splices stdin and stdout to the verified
// connection until the remote end closes it. Only spliced bytes go to
// stdout.
func knockConnect(ctx context.Context, c *client.Client, f *knockFlags, stdin io.Reader, stdout, stderr io.Writer) int {
	conn, res, err := c.Connect(ctx, f.host, f.reqs[0].Port)
	if err != nil {
		fmt.Fprintf(stderr, "sknock knock: %s\n", oneLine(err.Error()))
		if errors.Is(err, client.ErrNotOpen) {
			printProtocolHint(stderr, c, f.host)
		}
		return exitFailure
	}
	defer conn.Close()
	code := exitOK
	if res.Status == client.StatusAlreadyOpen {
		fmt.Fprintf(stderr, "sknock knock: %s\n", alreadyOpen(res))
		code = exitAlreadyOpen
	}
	// An interrupt during the splice ends it like a remote close.
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	if err := splice(conn, stdin, stdout); err != nil {
		if ctx.Err() != nil {
			return exitFailure
		}
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) {
			fmt.Fprintf(stderr, "sknock knock: %s: the connection was reset: the gatekeeper (a revocation, or an operator's grants revoke) or the service ended it\n", f.reqs[0])
			return exitFailure
		}
		fmt.Fprintf(stderr, "sknock knock: %s: %s\n", f.reqs[0], oneLine(err.Error()))
		return exitFailure
	}
	return code
}

// stdinGrace is how long splice waits, after the remote end closed, for
// the stdin copier to stop. A reader that cannot be interrupted (a
// terminal) is left to the process's exit.
const stdinGrace = 100 * time.Millisecond

// splice copies stdin to conn and conn to stdout. At EOF on stdin it
// half-closes conn (the remote sees EOF and may still answer); it returns
// when the remote closes conn.
func splice(conn net.Conn, stdin io.Reader, stdout io.Writer) error {
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stdin)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
		sent <- err
	}()
	_, err := io.Copy(stdout, conn)
	if err != nil {
		err = fmt.Errorf("receive: %w", err)
	}
	if c, ok := stdin.(io.Closer); ok {
		c.Close()
	}
	select {
	case sendErr := <-sent:
		if err == nil && sendErr != nil && !isClosedError(sendErr) {
			err = fmt.Errorf("send: %w", sendErr)
		}
	case <-time.After(stdinGrace):
	}
	return err
}

// isClosedError reports whether err only says that a side was closed,
// which is how the copier stops when the remote went first.
func isClosedError(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) ||
		strings.Contains(err.Error(), "broken pipe") || strings.Contains(err.Error(), "connection reset")
}
