package soak

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Client is one member of the population: a certificate (whose current
// generation the script swaps in on reissue), the ports it may open, and
// how it reaches the gatekeeper.
type Client struct {
	Name string `json:"name"`
	// Current is a file holding "GEN PATH": the generation number of the
	// client's certificate and its PKCS#12 bundle. The script replaces it
	// (rename) when it reissues the certificate.
	Current string   `json:"current"`
	Hosts   []string `json:"hosts"`               // the gatekeeper's addresses (IPv4, IPv6), one picked per knock
	TCP     []int    `json:"tcp"`                 // TCP ports it may open (echo services)
	UDP     []int    `json:"udp,omitempty"`       // UDP ports it may open (echo services)
	Source  string   `json:"source_ip,omitempty"` // --source-ip for its IPv4 knocks (behind NAT)
	Hold    bool     `json:"hold,omitempty"`      // keeps a connection open for minutes
	// Quiet holders do not knock while they hold their connection, as an
	// ssh session knocked for once: its grant ends long before it does.
	Quiet bool `json:"quiet,omitempty"`
}

// Population runs clients until ctx ends. Knock builds the knock
// command's arguments (the real client binary in the soak).
type Population struct {
	Clients []Client
	// Knock returns the command line that knocks for c with the bundle at
	// pfx on host for the given ports.
	Knock func(c Client, pfx, host string, ports []string) []string
	// MinGap and MaxGap bound the pause between a client's knocks.
	MinGap, MaxGap time.Duration
	// HoldMin and HoldMax bound how long a held connection lasts.
	HoldMin, HoldMax time.Duration
	// CheckFor is how long a knock's port is tried before it counts as
	// not open (longer than the bound judged, so lateness is measured).
	CheckFor time.Duration
	// EchoEvery is the held connections' echo period.
	EchoEvery time.Duration
	Log       *Log
}

// Run runs every client until ctx ends and its held connections are
// reported.
func (p *Population) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, c := range p.Clients {
		rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
		wg.Go(func() { p.runClient(ctx, c, rng, &wg) })
	}
	wg.Wait()
}

// readCurrent reads a client's certificate generation and bundle path.
func readCurrent(path string) (gen int, pfx string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, "", err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, "", fmt.Errorf("%s: want \"GEN PATH\", got %q", path, b)
	}
	gen, err = strconv.Atoi(f[0])
	return gen, f[1], err
}

func (p *Population) gap(rng *mrand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (p *Population) runClient(ctx context.Context, c Client, rng *mrand.Rand, wg *sync.WaitGroup) {
	holding := false
	var heldDone chan struct{}
	for sleepCtx(ctx, p.gap(rng, p.MinGap, p.MaxGap)) {
		if heldDone != nil {
			select {
			case <-heldDone:
				holding, heldDone = false, nil
			default:
			}
		}
		if holding && c.Quiet {
			continue
		}
		opened, gen, host, port := p.knockOnce(ctx, c, rng)
		if !opened && ctx.Err() == nil {
			// Knock again at once, as a user would (re-knocking).
			opened, gen, host, port = p.knockOnce(ctx, c, rng)
		}
		if opened && c.Hold && !holding && ctx.Err() == nil {
			holding, heldDone = true, make(chan struct{})
			d := p.gap(rng, p.HoldMin, p.HoldMax)
			done := heldDone
			wg.Go(func() {
				defer close(done)
				p.hold(ctx, c, gen, host, port, d)
			})
		}
	}
}

// knockOnce knocks for one TCP port (and one UDP port, if the client has
// any) and checks that each opens. It reports whether the TCP port did.
func (p *Population) knockOnce(ctx context.Context, c Client, rng *mrand.Rand) (opened bool, gen int, host string, tcpPort int) {
	gen, pfx, err := readCurrent(c.Current)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak clients:", err)
		return false, 0, "", 0
	}
	host = c.Hosts[rng.IntN(len(c.Hosts))]
	tcpPort = c.TCP[rng.IntN(len(c.TCP))]
	ports := []string{"tcp/" + strconv.Itoa(tcpPort)}
	udpPort := 0
	if len(c.UDP) > 0 {
		udpPort = c.UDP[rng.IntN(len(c.UDP))]
		ports = append(ports, "udp/"+strconv.Itoa(udpPort))
	}
	argv := p.Knock(c, pfx, host, ports)
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	out, err := exec.CommandContext(kctx, argv[0], argv[1:]...).CombinedOutput()
	cancel()
	sent := time.Now()
	if ctx.Err() != nil {
		return false, gen, host, tcpPort
	}
	if err != nil {
		// The knock was not sent (bad bundle, no route): report both
		// ports as not open, with the client's words.
		fmt.Fprintf(os.Stderr, "soak clients: %s: %v: %s\n", c.Name, err, bytes.TrimSpace(out))
	}
	var wg sync.WaitGroup
	var tcpAt, udpAt time.Duration
	var tcpOK, udpOK bool
	wg.Go(func() { tcpOK, tcpAt = checkTCP(ctx, host, tcpPort, sent, p.CheckFor) })
	if udpPort != 0 {
		wg.Go(func() { udpOK, udpAt = checkUDP(ctx, host, udpPort, sent, p.CheckFor) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return false, gen, host, tcpPort
	}
	p.Log.Add(Event{Kind: KindKnock, Client: c.Name, Gen: gen, Proto: "tcp", Port: tcpPort, Src: host, Sent: Unix(sent), OK: tcpOK, Dur: tcpAt.Seconds()})
	if udpPort != 0 {
		p.Log.Add(Event{Kind: KindKnock, Client: c.Name, Gen: gen, Proto: "udp", Port: udpPort, Src: host, Sent: Unix(sent), OK: udpOK, Dur: udpAt.Seconds()})
	}
	return tcpOK, gen, host, tcpPort
}

// checkTCP connects to host:port until a connection echoes a nonce or
// checkFor has passed since sent; it returns whether one did and when.
func checkTCP(ctx context.Context, host string, port int, sent time.Time, checkFor time.Duration) (bool, time.Duration) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	for time.Since(sent) < checkFor && ctx.Err() == nil {
		d := net.Dialer{Timeout: 150 * time.Millisecond}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if !sleepCtx(ctx, 20*time.Millisecond) {
				break
			}
			continue
		}
		at := time.Since(sent)
		ok := echoOnce(conn, 64) == nil
		conn.Close()
		return ok, at
	}
	return false, time.Since(sent)
}

// echoOnce writes n random bytes to conn and reads them back exactly.
func echoOnce(conn net.Conn, n int) error {
	msg := make([]byte, n)
	rand.Read(msg)
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, n)
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// checkUDP sends a nonce to host:port every 100 ms until it comes back
// or checkFor has passed since sent.
func checkUDP(ctx context.Context, host string, port int, sent time.Time, checkFor time.Duration) (bool, time.Duration) {
	conn, err := net.Dial("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false, 0
	}
	defer conn.Close()
	msg := make([]byte, 32)
	rand.Read(msg)
	buf := make([]byte, 64)
	for time.Since(sent) < checkFor && ctx.Err() == nil {
		conn.Write(msg)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break // timeout, or an ICMP error: send again
			}
			if bytes.Equal(buf[:n], msg) {
				return true, time.Since(sent)
			}
		}
	}
	return false, time.Since(sent)
}

// hold keeps one connection to host:port for d, echoing random bytes
// every EchoEvery and checking each byte, then reports it.
func (p *Population) hold(ctx context.Context, c Client, gen int, host string, port int, d time.Duration) {
	e := Event{Kind: KindHeld, Client: c.Name, Gen: gen, Proto: "tcp", Port: port, Src: host}
	conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return // the grant ended between the check and this dial: nothing held
	}
	defer conn.Close()
	e.Local = c.Source // behind NAT: the address the gatekeeper sees
	if e.Local == "" || strings.Contains(host, ":") {
		e.Local = conn.LocalAddr().(*net.TCPAddr).IP.String()
	}
	e.Opened = Unix(time.Now())
	e.LastOK = e.Opened
	e.Cause = heldEcho(ctx, conn, d, p.EchoEvery, &e)
	p.Log.Add(e)
}

// heldEcho echoes on conn until d has passed (planned), ctx ends (end),
// the connection fails (cut) or an echo differs (corrupt), filling in e's
// byte counts and LastOK.
func heldEcho(ctx context.Context, conn net.Conn, d, every time.Duration, e *Event) string {
	end := time.Now().Add(d)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	buf := make([]byte, 1024)
	for {
		if !sleepCtx(ctx, every) {
			return "end"
		}
		if time.Now().After(end) {
			return "planned"
		}
		n := 32 + rng.IntN(480)
		msg := make([]byte, n)
		rand.Read(msg)
		// A generous deadline: on a loaded machine an echo can wait
		// seconds for the CPU; a connection silent for 10 s counts as cut.
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(msg); err != nil {
			e.Lost += int64(n)
			return "cut"
		}
		got := buf[:n]
		if k, err := io.ReadFull(conn, got); err != nil {
			e.Lost += int64(n - k)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return "stalled"
			}
			return "cut"
		}
		if !bytes.Equal(got, msg) {
			for i := range got {
				if got[i] != msg[i] {
					e.Corrupt++
				}
			}
			return "corrupt"
		}
		e.Bytes += int64(n)
		e.LastOK = Unix(time.Now())
	}
}
