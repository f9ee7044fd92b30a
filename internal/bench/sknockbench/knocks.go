package main

import (
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"sknock/knock"
	"sknock/packet"
	"sknock/pki"
)

// sealer seals knocks for a set of client bundles to one server.
type sealer struct {
	clients []*pki.Bundle
	server  *ecdh.PublicKey
	target  *knock.Target
	// protocol is the wire version sealed: 1 or 2.
	protocol int
}

func loadSealer(pfxList, passwordFile, serverCert string) (*sealer, error) {
	pw, err := os.ReadFile(passwordFile)
	if err != nil {
		return nil, err
	}
	password := strings.TrimSpace(string(pw))
	s := &sealer{}
	for _, path := range strings.Split(pfxList, ",") {
		b, err := pki.LoadBundle(path, password)
		if err != nil {
			return nil, err
		}
		s.clients = append(s.clients, b)
	}
	certs, err := pki.LoadCertificates(serverCert)
	if err != nil {
		return nil, err
	}
	pub, ok := certs[0].PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("server certificate key is not ECDSA")
	}
	if s.server, err = pub.ECDH(); err != nil {
		return nil, err
	}
	if s.target, err = knock.NewTarget(certs[0].RawSubjectPublicKeyInfo); err != nil {
		return nil, err
	}
	s.protocol = 1
	return s, nil
}

// seal makes one knock from client i (mod the number of clients) asking
// for tcp/port and naming src, stamped now.
func (s *sealer) seal(i int, port uint16, src netip.Addr) ([]byte, error) {
	b := s.clients[i%len(s.clients)]
	if s.protocol == 2 {
		k := &knock.KnockV2{TimestampMillis: uint64(time.Now().UnixMilli()), ClientIP: src,
			Requests: []knock.Request{{Proto: packet.TCP, Port: port}}, Chain: [][]byte{b.Cert.Raw}}
		return knock.SealV2(k, b.Key, s.target, nil)
	}
	k := &knock.Knock{Proto: packet.TCP, Port: port, ClientIP: src, Timestamp: uint32(time.Now().Unix()), Certificate: b.Cert.Raw}
	return knock.Seal(k, b.Key, s.server, nil)
}

// addrRange parses "198.18.1.1+64": 64 addresses counting up from the first.
func addrRange(s string) ([]netip.Addr, error) {
	first, count, ok := strings.Cut(s, "+")
	a, err := netip.ParseAddr(first)
	if err != nil {
		return nil, err
	}
	n := 1
	if ok {
		if n, err = strconv.Atoi(count); err != nil || n < 1 {
			return nil, fmt.Errorf("bad count in %q", s)
		}
	}
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = a
		a = a.Next()
	}
	return out, nil
}

// portRange parses "2000-2199".
func portRange(s string) (first, last uint16, err error) {
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		b = a
	}
	f, err1 := strconv.ParseUint(a, 10, 16)
	l, err2 := strconv.ParseUint(b, 10, 16)
	if err1 != nil || err2 != nil || f > l || f == 0 {
		return 0, 0, fmt.Errorf("bad port range %q", s)
	}
	return uint16(f), uint16(l), nil
}

// pacer spreads sends at rate per second; wait blocks until send number i
// is due, and reports false once the deadline passed.
type pacer struct {
	start    time.Time
	rate     float64
	deadline time.Time
}

func (p *pacer) wait(i int) bool {
	due := p.start.Add(time.Duration(float64(i) / p.rate * float64(time.Second)))
	if d := time.Until(due); d > 200*time.Microsecond {
		time.Sleep(d)
	}
	return time.Now().Before(p.deadline)
}

// sealSend pre-seals n valid knocks from many clients and sources and
// sends them to dst at a bounded rate: the daemon's grant count over the
// send window is the end-to-end knock throughput.
func sealSend(args []string) error {
	fs := flag.NewFlagSet("seal-send", flag.ExitOnError)
	pfx := fs.String("pfx", "", "client bundles, comma-separated")
	pwFile := fs.String("password-file", "", "bundle password file")
	serverCert := fs.String("server-cert", "", "server certificate")
	dst := fs.String("dst", "", "server address")
	sources := fs.String("sources", "", "source addresses, FIRST+COUNT (assigned locally)")
	knockPorts := fs.String("knock-ports", "40000-40100", "UDP knock port range")
	port := fs.Uint("port", 2000, "TCP port the knocks ask for")
	n := fs.Int("n", 10000, "knocks to send")
	rate := fs.Float64("rate", 5000, "knocks per second")
	limit := fs.Duration("for", 30*time.Second, "stop sending after this long")
	fs.Parse(args)
	s, err := loadSealer(*pfx, *pwFile, *serverCert)
	if err != nil {
		return err
	}
	srcs, err := addrRange(*sources)
	if err != nil {
		return err
	}
	kFirst, kLast, err := portRange(*knockPorts)
	if err != nil {
		return err
	}
	dstAddr, err := netip.ParseAddr(*dst)
	if err != nil {
		return err
	}
	conns := make([]*net.UDPConn, len(srcs))
	for i, a := range srcs {
		if conns[i], err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0))); err != nil {
			return err
		}
		defer conns[i].Close()
	}
	// Seal everything first: sealing costs as much as deciding, and the
	// sender must not take the daemon's CPU while it is measured.
	start := time.Now()
	knocks := make([][]byte, *n)
	var wg sync.WaitGroup
	var sealErr error
	var mu sync.Mutex
	workers := 2
	for w := range workers {
		wg.Go(func() {
			for i := w; i < *n; i += workers {
				k, err := s.seal(i, uint16(*port), srcs[i%len(srcs)])
				if err != nil {
					mu.Lock()
					sealErr = err
					mu.Unlock()
					return
				}
				knocks[i] = k
			}
		})
	}
	wg.Wait()
	if sealErr != nil {
		return sealErr
	}
	kv("seal_s", "%.3f", time.Since(start).Seconds())
	kv("knock_bytes", "%d", len(knocks[0]))
	p := &pacer{start: time.Now(), rate: *rate}
	p.deadline = p.start.Add(*limit)
	sent, errs := 0, 0
	for i, k := range knocks {
		if !p.wait(i) {
			break
		}
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, kFirst+uint16(i%int(kLast-kFirst+1))))
		if _, err := conns[i%len(conns)].WriteToUDP(k, to); err != nil {
			errs++
			continue
		}
		sent++
	}
	el := time.Since(p.start)
	kv("sent", "%d", sent)
	kv("send_errors", "%d", errs)
	kv("send_s", "%.3f", el.Seconds())
	kv("offered_rate", "%.0f", float64(sent)/el.Seconds())
	return nil
}

// garbage floods dst's knock ports with datagrams that look like knocks —
// the protocol id, version, a ciphertext of the right size and a valid
// P-256 point, so that the server pays for an ECDH before the decryption
// fails — but whose content is random.
func garbage(args []string) error {
	fs := flag.NewFlagSet("garbage", flag.ExitOnError)
	dst := fs.String("dst", "", "server address")
	knockPorts := fs.String("knock-ports", "40000-40100", "UDP knock port range")
	size := fs.Int("size", 700, "datagram size (that of a real knock)")
	n := fs.Int("n", 100000, "datagrams to send at most")
	rate := fs.Float64("rate", 10000, "datagrams per second")
	limit := fs.Duration("for", 10*time.Second, "stop after this long")
	sources := fs.String("sources", "", "source addresses FIRST+COUNT (assigned locally); empty: the default")
	fs.Parse(args)
	dstAddr, err := netip.ParseAddr(*dst)
	if err != nil {
		return err
	}
	kFirst, kLast, err := portRange(*knockPorts)
	if err != nil {
		return err
	}
	var conns []*net.UDPConn
	if *sources == "" {
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	} else {
		srcs, err := addrRange(*sources)
		if err != nil {
			return err
		}
		for _, a := range srcs {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
	}
	ct := (*size - 4 - knock.PublicKeySize) / 16 * 16
	points := make([][]byte, 64)
	for i := range points {
		k, err := ecdh.P256().GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		points[i] = k.PublicKey().Bytes()
	}
	buf := make([]byte, 4+ct+knock.PublicKeySize)
	buf[0], buf[1], buf[2], buf[3] = knock.ProtocolID, knock.VersionMajor, knock.VersionMinor, knock.VersionPatch
	rng := mrand.NewChaCha8([32]byte{1})
	p := &pacer{start: time.Now(), rate: *rate}
	p.deadline = p.start.Add(*limit)
	sent := 0
	for i := 0; i < *n && p.wait(i); i++ {
		rng.Read(buf[4 : 4+ct])
		copy(buf[4+ct:], points[i%len(points)])
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(dstAddr, kFirst+uint16(i%int(kLast-kFirst+1))))
		if _, err := conns[i%len(conns)].WriteToUDP(buf, to); err == nil {
			sent++
		}
	}
	el := time.Since(p.start)
	kv("garbage_sent", "%d", sent)
	kv("garbage_s", "%.3f", el.Seconds())
	kv("garbage_rate", "%.0f", float64(sent)/el.Seconds())
	return nil
}

// listen accepts and closes connections on a port range until killed or
// the time bound.
func listen(args []string) error {
	fs := flag.NewFlagSet("listen", flag.ExitOnError)
	ports := fs.String("ports", "2000-2199", "TCP ports")
	limit := fs.Duration("for", 15*time.Minute, "exit after this long")
	fs.Parse(args)
	first, last, err := portRange(*ports)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	for p := int(first); p <= int(last); p++ {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	fmt.Println("listening")
	<-ctx.Done()
	return nil
}
