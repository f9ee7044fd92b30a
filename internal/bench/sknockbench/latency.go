package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// probe dials addr every `every` (overlapping dials, each bounded by
// timeout) until one connects or the deadline passes, and returns when the
// first connection was made, or the zero time.
func probe(ctx context.Context, d net.Dialer, addr string, every time.Duration) time.Time {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	won := make(chan time.Time, 1)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		go func() {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return
			}
			at := time.Now()
			c.Close()
			select {
			case won <- at:
			default:
			}
		}()
		select {
		case at := <-won:
			return at
		case <-ctx.Done():
			return time.Time{}
		case <-tick.C:
		}
	}
}

// latency measures, n times, the time from starting to open a port (by
// running a client command, by sending a pre-sealed knock, or by nothing
// for a port that is open anyway) to the first accepted connection.
// Iteration i uses source i mod the sources and the next port after
// every round of sources; before it starts, the port must refuse a
// connect from that source (an earlier grant still open is waited out),
// so no grant of an earlier iteration helps.
func latency(args []string) error {
	fs := flag.NewFlagSet("latency", flag.ExitOnError)
	mode := fs.String("mode", "exec", "exec (run -cmd), datagram (send a sealed knock), open (no knock), run (time -cmd from start to exit, no prober)")
	cmdline := fs.String("cmd", "", "client command for exec mode; {port} is replaced by the port")
	dst := fs.String("dst", "", "server address")
	ports := fs.String("ports", "2000-2199", "TCP ports, one per iteration")
	n := fs.Int("n", 200, "iterations")
	every := fs.Duration("probe-every", time.Millisecond, "gap between probe connects")
	timeout := fs.Duration("timeout", 2*time.Second, "give up on one iteration after this long")
	gap := fs.Duration("gap", 10*time.Millisecond, "pause between iterations")
	prefix := fs.String("prefix", "lat", "output key prefix")
	pfx := fs.String("pfx", "", "datagram mode: client bundle")
	pwFile := fs.String("password-file", "", "datagram mode: bundle password file")
	serverCert := fs.String("server-cert", "", "datagram mode: server certificate")
	knockPort := fs.Uint("knock-port", 40000, "datagram mode: UDP knock port")
	sources := fs.String("sources", "", "datagram and open mode: local source addresses FIRST+COUNT; empty: the default one")
	protocol := fs.Int("protocol", 1, "datagram mode: knock wire version, 1 or 2")
	fs.Parse(args)
	var srcs []netip.Addr
	if *sources != "" {
		var err error
		if srcs, err = addrRange(*sources); err != nil {
			return err
		}
	}
	first, last, err := portRange(*ports)
	if err != nil {
		return err
	}
	dstAddr, err := netip.ParseAddr(*dst)
	if err != nil {
		return err
	}
	var s *sealer
	if *mode == "datagram" {
		if s, err = loadSealer(*pfx, *pwFile, *serverCert); err != nil {
			return err
		}
		s.protocol = *protocol
	}
	nsrc := max(1, len(srcs))
	knockTo := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, uint16(*knockPort)))
	var lat []time.Duration
	fails, waits := 0, 0
	if *mode == "run" {
		for i := range *n {
			port := first + uint16(i%int(last-first+1))
			argv := strings.Fields(strings.ReplaceAll(*cmdline, "{port}", strconv.Itoa(int(port))))
			start := time.Now()
			if err := exec.Command(argv[0], argv[1:]...).Run(); err != nil {
				fails++
				continue
			}
			lat = append(lat, time.Since(start))
		}
		kv(*prefix+"_fail", "%d", fails)
		printLatencies(*prefix, lat)
		return nil
	}
	for i := range *n {
		port := first + uint16((i/nsrc)%int(last-first+1))
		addr := netip.AddrPortFrom(dstAddr, port).String()
		dialer := net.Dialer{Timeout: *timeout}
		var laddr *net.UDPAddr
		if len(srcs) > 0 {
			src := srcs[i%nsrc]
			dialer.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
		}
		if *mode != "open" {
			w, err := waitClosed(dialer, addr)
			if err != nil {
				return err
			}
			waits += w
		}
		var kconn *net.UDPConn
		var datagram []byte
		if s != nil {
			if kconn, err = net.DialUDP("udp", laddr, knockTo); err != nil {
				return err
			}
			src := kconn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
			if datagram, err = s.seal(i, port, src); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		var cmd *exec.Cmd
		start := time.Now()
		switch *mode {
		case "exec":
			argv := strings.Fields(strings.ReplaceAll(*cmdline, "{port}", strconv.Itoa(int(port))))
			cmd = exec.Command(argv[0], argv[1:]...)
			cmd.Stdout, cmd.Stderr = nil, os.Stderr
			if err := cmd.Start(); err != nil {
				cancel()
				return err
			}
		case "datagram":
			if _, err := kconn.Write(datagram); err != nil {
				cancel()
				return err
			}
		case "open":
		default:
			cancel()
			return fmt.Errorf("unknown mode %q", *mode)
		}
		at := probe(ctx, dialer, addr, *every)
		cancel()
		if kconn != nil {
			kconn.Close()
		}
		if cmd != nil {
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(*timeout):
				cmd.Process.Kill()
				<-done
			}
		}
		if at.IsZero() {
			fails++
		} else {
			lat = append(lat, at.Sub(start))
		}
		time.Sleep(*gap)
	}
	kv(*prefix+"_fail", "%d", fails)
	kv(*prefix+"_waited", "%d", waits)
	printLatencies(*prefix, lat)
	return nil
}

// waitClosed makes sure addr refuses (or ignores) a connect from the
// dialer's source before an iteration starts, waiting out a grant left by
// an earlier one (at most 10 s); it returns how many times it waited.
func waitClosed(d net.Dialer, addr string) (int, error) {
	d.Timeout = 30 * time.Millisecond
	for w := 0; w < 100; w++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return w, nil
		}
		c.Close()
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s stays open", addr)
}

// connectLatency connects to addr every gap for a bounded time and
// reports the connect times: the gate's latency as a granted client sees
// it.
func connectLatency(args []string) error {
	fs := flag.NewFlagSet("connect", flag.ExitOnError)
	addr := fs.String("addr", "", "host:port")
	n := fs.Int("n", 1000, "connects at most")
	gap := fs.Duration("gap", 5*time.Millisecond, "pause between connects")
	limit := fs.Duration("for", 10*time.Second, "stop after this long")
	prefix := fs.String("prefix", "conn", "output key prefix")
	src := fs.String("src", "", "local source address; empty: the default")
	fs.Parse(args)
	d := net.Dialer{Timeout: time.Second}
	if *src != "" {
		a, err := netip.ParseAddr(*src)
		if err != nil {
			return err
		}
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
	}
	deadline := time.Now().Add(*limit)
	var lat []time.Duration
	fails := 0
	for i := 0; i < *n && time.Now().Before(deadline); i++ {
		start := time.Now()
		c, err := d.Dial("tcp", *addr)
		if err != nil {
			fails++
		} else {
			lat = append(lat, time.Since(start))
			c.Close()
		}
		time.Sleep(*gap)
	}
	kv(*prefix+"_fail", "%d", fails)
	printLatencies(*prefix, lat)
	return nil
}
