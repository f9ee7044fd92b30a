// Command soak runs the long-lived parts of scripts/soak.sh, each in the
// network namespace it is started in, each bounded by -for (and ended by
// SIGTERM or SIGINT), each writing JSON events for the report:
//
//	soak clients   the client population: knocks, open checks, held connections
//	soak prober    the ungranted prober
//	soak echo      TCP and UDP echo services
//	soak sample    sknockd's metrics every -every, and its log lines per second
//	soak notify    the service manager's notify socket (WATCHDOG=1)
//	soak crlserve  serve a directory over HTTP (the CRL for crl.url)
//	soak revoke    run `sknock grants revoke ... --json` and record what it ended
//	soak report    judge a run from its events: the table, then soak: PASS or FAIL
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sknock/internal/soak"
	"sknock/rules"
)

var commands = map[string]func(ctx context.Context, args []string) error{
	"clients":  clients,
	"prober":   prober,
	"echo":     echo,
	"sample":   sample,
	"notify":   notify,
	"crlserve": crlServe,
	"revoke":   revoke,
	"report":   report,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: soak clients|prober|echo|sample|notify|crlserve|revoke|report [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := commands[os.Args[1]](ctx, os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "soak %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// job is what every long-running subcommand shares: its events file
// and its bound in time.
type job struct {
	events *string
	limit  *time.Duration
}

// jobFlags adds -events and -for to fs.
func jobFlags(fs *flag.FlagSet) job {
	return job{
		events: fs.String("events", "", "events file to append to"),
		limit:  fs.Duration("for", time.Hour, "stop after this long"),
	}
}

// start opens the events file and bounds ctx by -for; done closes both.
func (j job) start(ctx context.Context) (_ context.Context, log *soak.Log, done func(), err error) {
	if *j.events == "" {
		return nil, nil, nil, fmt.Errorf("-events is required")
	}
	if log, err = soak.OpenLog(*j.events); err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, *j.limit)
	return ctx, log, func() { cancel(); log.Close() }, nil
}

// ports parses "5000-5003,5050" into port numbers.
func ports(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", part, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				return nil, fmt.Errorf("port %q: %w", part, err)
			}
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out, nil
}

// tcpUDP parses the -tcp and -udp port lists.
func tcpUDP(tcp, udp string) (tcpPorts, udpPorts []int, err error) {
	if tcpPorts, err = ports(tcp); err != nil {
		return nil, nil, err
	}
	udpPorts, err = ports(udp)
	return tcpPorts, udpPorts, err
}

func addrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

func clients(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("clients", flag.ExitOnError)
	spec := fs.String("spec", "", "JSON file: a list of clients (see soak.Client)")
	j := jobFlags(fs)
	sknock := fs.String("sknock", "sknock", "the client binary")
	serverCert := fs.String("server-cert", "", "the gatekeeper's certificate")
	pwFile := fs.String("password-file", "", "bundle password file")
	knockPorts := fs.String("knock-ports", "40000-40999", "knock port range")
	protocols := fs.String("protocols", "", "comma-separated --protocol values to alternate (empty: the flag is not given)")
	minGap := fs.Duration("min-gap", 3*time.Second, "shortest pause between a client's knocks")
	maxGap := fs.Duration("max-gap", 20*time.Second, "longest pause")
	holdMin := fs.Duration("hold-min", time.Minute, "shortest held connection")
	holdMax := fs.Duration("hold-max", 5*time.Minute, "longest held connection")
	fs.Parse(args)
	b, err := os.ReadFile(*spec)
	if err != nil {
		return err
	}
	var cs []soak.Client
	if err := json.Unmarshal(b, &cs); err != nil {
		return fmt.Errorf("%s: %w", *spec, err)
	}
	kp, err := ports(*knockPorts)
	if err != nil {
		return err
	}
	var protos []string
	if *protocols != "" {
		protos = strings.Split(*protocols, ",")
	}
	ctx, log, done, err := j.start(ctx)
	if err != nil {
		return err
	}
	defer done()
	n := 0
	p := &soak.Population{
		Clients: cs, MinGap: *minGap, MaxGap: *maxGap, HoldMin: *holdMin, HoldMax: *holdMax,
		CheckFor: 3 * time.Second, EchoEvery: 250 * time.Millisecond, Log: log,
		Knock: func(c soak.Client, pfx, host string, ps []string) []string {
			n++
			argv := []string{*sknock, "knock", "--pkcs12", pfx, "--server-cert", *serverCert, "--password-file", *pwFile,
				"--no-verify", "-q", "--knock-port", strconv.Itoa(kp[(n*7919)%len(kp)])}
			if len(protos) > 0 {
				argv = append(argv, "--protocol", protos[n%len(protos)])
			}
			if c.Source != "" && !strings.Contains(host, ":") {
				argv = append(argv, "--source-ip", c.Source)
			}
			return append(append(argv, host), ps...)
		},
	}
	p.Run(ctx)
	return nil
}

func prober(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("prober", flag.ExitOnError)
	sources := fs.String("sources", "", "local addresses to probe from, comma-separated")
	targets := fs.String("targets", "", "the gatekeeper's addresses")
	tcp := fs.String("tcp", "", "TCP ports, e.g. 5000-5009,5050")
	udp := fs.String("udp", "", "UDP ports")
	timeout := fs.Duration("timeout", 150*time.Millisecond, "per attempt")
	j := jobFlags(fs)
	fs.Parse(args)
	p := &soak.Prober{Timeout: *timeout}
	var err error
	if p.Sources, err = addrs(*sources); err != nil {
		return err
	}
	if p.Targets, err = addrs(*targets); err != nil {
		return err
	}
	if p.TCP, p.UDP, err = tcpUDP(*tcp, *udp); err != nil {
		return err
	}
	ctx, log, done, err := j.start(ctx)
	if err != nil {
		return err
	}
	defer done()
	p.Log = log
	p.Run(ctx)
	return nil
}

func echo(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("echo", flag.ExitOnError)
	tcp := fs.String("tcp", "", "TCP ports")
	udp := fs.String("udp", "", "UDP ports")
	fault := fs.String("fault", "", "corrupt or cut: misbehave once (showing the soak fails)")
	faultAfter := fs.Duration("fault-after", 20*time.Second, "in the first connection older than this")
	limit := fs.Duration("for", time.Hour, "stop after this long")
	fs.Parse(args)
	e := &soak.Echo{Fault: *fault, FaultAfter: *faultAfter}
	var err error
	if e.TCP, e.UDP, err = tcpUDP(*tcp, *udp); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	return e.Serve(ctx)
}

func sample(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("sample", flag.ExitOnError)
	url := fs.String("url", "http://127.0.0.1:9466/metrics", "sknockd's metrics")
	every := fs.Duration("every", 10*time.Second, "sampling period")
	logFile := fs.String("log", "", "sknockd's log file, whose lines per second are counted")
	j := jobFlags(fs)
	fs.Parse(args)
	ctx, log, done, err := j.start(ctx)
	if err != nil {
		return err
	}
	defer done()
	if *logFile != "" {
		go soak.CountLines(ctx, *logFile, log)
	}
	(&soak.Sampler{URL: *url, Every: *every, Log: log}).Run(ctx)
	return nil
}

func notify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("notify", flag.ExitOnError)
	socket := fs.String("socket", "", "the NOTIFY_SOCKET path to bind")
	j := jobFlags(fs)
	fs.Parse(args)
	ctx, log, done, err := j.start(ctx)
	if err != nil {
		return err
	}
	defer done()
	return soak.ListenNotify(ctx, *socket, log)
}

func crlServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("crlserve", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to serve")
	listen := fs.String("listen", "", "host:port")
	limit := fs.Duration("for", time.Hour, "stop after this long")
	fs.Parse(args)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(*dir)), ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// revoke runs an operator revocation (the command after --, which must
// print sknock grants revoke's JSON answer) and records it as a revoke
// event of -client's certificate -gen, stamped before the command ran,
// with the grants sknockd ended. A command that fails records nothing.
func revoke(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("revoke", flag.ExitOnError)
	events := fs.String("events", "", "events file to append to")
	client := fs.String("client", "", "the client whose certificate it is")
	gen := fs.Int("gen", 0, "its generation")
	fs.Parse(args)
	if fs.NArg() == 0 {
		return fmt.Errorf("no command after the flags")
	}
	at := soak.Unix(time.Now())
	out, err := exec.CommandContext(ctx, fs.Arg(0), fs.Args()[1:]...).Output()
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(fs.Args(), " "), err)
	}
	var answer struct {
		Grants []struct {
			Source string `json:"source"`
			Proto  string `json:"proto"`
			Port   int    `json:"port"`
		} `json:"grants"`
	}
	if err := json.Unmarshal(out, &answer); err != nil {
		return fmt.Errorf("the answer %q: %w", out, err)
	}
	ended := []string{}
	for _, g := range answer.Grants {
		ended = append(ended, fmt.Sprintf("%s %s/%d", g.Source, g.Proto, g.Port))
	}
	log, err := soak.OpenLog(*events)
	if err != nil {
		return err
	}
	log.Add(soak.Event{T: at, Kind: soak.KindRevoke, Name: "grants", Client: *client, Gen: *gen, Ended: ended})
	return log.Close()
}

// protectFlag collects -protect NAME=PORTS (gate.protect's syntax).
type protectFlag map[string]map[string]bool

func (p protectFlag) String() string { return "" }

func (p protectFlag) Set(s string) error {
	name, spec, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("want NAME=tcp/5000-5009,udp/6000")
	}
	set := map[string]bool{}
	for _, item := range strings.Split(spec, ",") {
		ps, err := rules.ParsePortSpec(strings.TrimSpace(item))
		if err != nil {
			return err
		}
		for port := int(ps.First); port <= int(ps.Last); port++ {
			set[fmt.Sprintf("%s/%d", ps.Proto, port)] = true
		}
	}
	p[name] = set
	return nil
}

func report(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", "", "directory of *.events files")
	protect := protectFlag{}
	fs.Var(protect, "protect", "NAME=PORTS: what configuration NAME protects (repeatable)")
	lim := soak.DefaultLimits()
	fs.Float64Var(&lim.OpenDuration, "open-duration", lim.OpenDuration, "gate.open_duration, seconds")
	fs.Float64Var(&lim.WatchdogSec, "watchdog", lim.WatchdogSec, "WatchdogSec, seconds (0: not judged)")
	fs.Float64Var(&lim.LogRateMax, "log-rate-max", lim.LogRateMax, "bound on log lines per second")
	fs.Parse(args)
	lim.Protected = protect
	files, err := filepath.Glob(filepath.Join(*dir, "*.events"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no events files in %q", *dir)
	}
	evs, err := soak.ReadEvents(files...)
	if err != nil {
		return err
	}
	r := soak.Analyze(evs, lim)
	fmt.Print(r.Table())
	if len(r.Failed()) > 0 {
		os.Exit(1)
	}
	return nil
}
