// Package spoof sends bounded floods of UDP datagrams (or TCP SYNs) over IPv4 from
// random spoofed source addresses, as `hping3 --rand-source --flood` does,
// for the flood tests and scripts/bench.sh. It refuses any address
// outside 198.18.0.0/15, the benchmarking range the tests use in the
// namespaces they make, and every flood is bounded in count and time.
package spoof

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"sknock/knock"
)

// Range is the only range Flood sends from and to: 198.18.0.0/15
// (RFC 2544, benchmarking).
var Range = netip.MustParsePrefix("198.18.0.0/15")

// Config is one flood.
type Config struct {
	// Dst is the target address, in Range.
	Dst netip.Addr
	// FirstPort and LastPort bound the UDP destination ports; each
	// datagram goes to the next one, round robin.
	FirstPort, LastPort uint16
	// Sources are the prefixes the random source addresses come from,
	// each inside Range; addresses inside Exclude are skipped.
	Sources []netip.Prefix
	Exclude []netip.Prefix
	// Payloads are sent round robin. Required.
	Payloads [][]byte
	// Rate is datagrams per second (> 0).
	Rate float64
	// N bounds the datagrams sent, For the time spent sending; both are
	// required.
	N   int
	For time.Duration
	// Seed seeds the choice of sources (any value; runs with the same
	// seed spoof the same sequence of sources).
	Seed uint64
	// Mutate overwrites bytes 4-19 of every datagram sent (a knock's
	// first ciphertext block) with random ones, so that no two datagrams
	// are alike even when Payloads repeat: none is decided from a cache
	// of outcomes by datagram.
	Mutate bool
	// SYN sends TCP SYNs (random sequence numbers, no payload) to the
	// ports instead of UDP datagrams; Payloads are then not used.
	SYN bool
}

// Result is what a flood sent.
type Result struct {
	Sent, Errors int
	Elapsed      time.Duration
}

// Rate is the datagrams sent per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

func (c *Config) check() error {
	if !c.Dst.Is4() || !Range.Contains(c.Dst) {
		return fmt.Errorf("spoof: destination %s is not in %s", c.Dst, Range)
	}
	if len(c.Sources) == 0 {
		return errors.New("spoof: no source prefix")
	}
	for _, p := range c.Sources {
		if !p.Addr().Is4() || p.Bits() < Range.Bits() || !Range.Contains(p.Addr()) {
			return fmt.Errorf("spoof: source prefix %s is not inside %s", p, Range)
		}
	}
	if len(c.Payloads) == 0 && !c.SYN {
		return errors.New("spoof: no payload")
	}
	for _, p := range c.Payloads {
		if len(p) > 1400 {
			return fmt.Errorf("spoof: payload of %d bytes, at most 1400", len(p))
		}
	}
	if c.Rate <= 0 || c.N <= 0 || c.For <= 0 {
		return fmt.Errorf("spoof: rate %g, count %d and duration %s must be positive", c.Rate, c.N, c.For)
	}
	if c.FirstPort == 0 || c.LastPort < c.FirstPort {
		return fmt.Errorf("spoof: bad port range %d-%d", c.FirstPort, c.LastPort)
	}
	return nil
}

// Flood sends cfg's flood from the calling thread's network namespace
// through a raw socket (root) and returns what it sent. It stops at
// cfg.N datagrams, after cfg.For, or when ctx is done.
func Flood(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.check(); err != nil {
		return Result{}, err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
	if err != nil {
		return Result{}, fmt.Errorf("spoof: raw socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: cfg.Dst.As4()}
	rng := mrand.New(mrand.NewPCG(cfg.Seed, 0x5eed))
	pkt := make([]byte, 20+8+1400)
	start := time.Now()
	deadline := start.Add(cfg.For)
	var res Result
	nports := int(cfg.LastPort-cfg.FirstPort) + 1
	for i := 0; i < cfg.N; i++ {
		if i%64 == 0 {
			now := time.Now()
			if now.After(deadline) || ctx.Err() != nil {
				break
			}
			due := start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
			}
		}
		src := cfg.source(rng)
		sport, dport := uint16(1024+rng.IntN(60000)), cfg.FirstPort+uint16(i%nports)
		if cfg.SYN {
			n := buildSYN(pkt, src, cfg.Dst, sport, dport, rng.Uint32())
			if err := unix.Sendto(fd, pkt[:n], 0, to); err != nil {
				res.Errors++
				continue
			}
			res.Sent++
			continue
		}
		payload := cfg.Payloads[i%len(cfg.Payloads)]
		n := build(pkt, src, cfg.Dst, sport, dport, payload)
		if cfg.Mutate && len(payload) >= 20 {
			binary.LittleEndian.PutUint64(pkt[28+4:], rng.Uint64())
			binary.LittleEndian.PutUint64(pkt[28+12:], rng.Uint64())
		}
		if err := unix.Sendto(fd, pkt[:n], 0, to); err != nil {
			res.Errors++
			continue
		}
		res.Sent++
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// source draws a random address of cfg.Sources outside cfg.Exclude.
func (c *Config) source(rng *mrand.Rand) netip.Addr {
	for {
		p := c.Sources[rng.IntN(len(c.Sources))]
		b := p.Addr().As4()
		base := binary.BigEndian.Uint32(b[:])
		host := uint32(0)
		if p.Bits() < 32 {
			host = rng.Uint32() & (1<<(32-p.Bits()) - 1)
		}
		binary.BigEndian.PutUint32(b[:], base|host)
		a := netip.AddrFrom4(b)
		excluded := false
		for _, x := range c.Exclude {
			excluded = excluded || x.Contains(a)
		}
		if !excluded {
			return a
		}
	}
}

// build writes an IPv4 header and a UDP datagram into pkt and returns its
// length. The kernel fills in the IP checksum and id of a raw packet; a
// zero UDP checksum means none (IPv4).
func build(pkt []byte, src, dst netip.Addr, sport, dport uint16, payload []byte) int {
	total := 20 + 8 + len(payload)
	writeIPv4(pkt, src, dst, unix.IPPROTO_UDP, total)
	u := pkt[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	binary.BigEndian.PutUint16(u[6:], 0)
	copy(u[8:], payload)
	return total
}

// buildSYN writes an IPv4 header and a TCP SYN into pkt and returns its
// length. The kernel fills in the IP checksum and id; the TCP checksum,
// over the pseudo-header, is computed here.
func buildSYN(pkt []byte, src, dst netip.Addr, sport, dport uint16, seq uint32) int {
	const total = 20 + 20
	writeIPv4(pkt, src, dst, unix.IPPROTO_TCP, total)
	t := pkt[20:total]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], 0)
	t[12] = 5 << 4 // header length: 5 words
	t[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(t[14:], 64240)
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[18:], 0)
	binary.BigEndian.PutUint16(t[16:], tcpChecksum(pkt[12:16], pkt[16:20], t))
	return total
}

// tcpChecksum is the Internet checksum of a TCP segment with its IPv4
// pseudo-header.
func tcpChecksum(src, dst, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src)
	add(dst)
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// writeIPv4 writes a 20-byte IPv4 header of a packet of total bytes.
func writeIPv4(pkt []byte, src, dst netip.Addr, proto byte, total int) {
	pkt[0] = 0x45
	pkt[1] = 0
	binary.BigEndian.PutUint16(pkt[2:], uint16(total))
	binary.BigEndian.PutUint32(pkt[4:], 0) // id 0 (kernel fills), no fragment flags
	pkt[8] = 64
	pkt[9] = proto
	binary.BigEndian.PutUint16(pkt[10:], 0)
	s, d := src.As4(), dst.As4()
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
}

// RandomPayloads returns n datagrams of size random bytes: refused as
// malformed at no cost.
func RandomPayloads(n, size int, seed uint64) [][]byte {
	rng := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'r'})
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, size)
		rng.Read(out[i])
	}
	return out
}

// FreshPayloads returns n distinct datagrams of about size bytes shaped
// as knocks (protocol id, version, whole blocks of random ciphertext),
// each ending in a fresh ephemeral P-256 public key: each costs the
// server an ECDH before its decryption fails, and no two share a point.
// No certificate is needed to make them. They are made on every core.
func FreshPayloads(n, size int) ([][]byte, error) {
	ct := (size - 4 - knock.PublicKeySize) / 16 * 16
	if ct < 16 {
		return nil, fmt.Errorf("spoof: size %d leaves no ciphertext", size)
	}
	out := make([][]byte, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		fail error
	)
	workers := runtime.NumCPU()
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				k, err := ecdh.P256().GenerateKey(rand.Reader)
				if err != nil {
					mu.Lock()
					fail = err
					mu.Unlock()
					return
				}
				b := make([]byte, 4+ct+knock.PublicKeySize)
				b[0], b[1], b[2], b[3] = knock.ProtocolID, knock.VersionMajor, knock.VersionMinor, knock.VersionPatch
				rand.Read(b[4 : 4+ct])
				copy(b[4+ct:], k.PublicKey().Bytes())
				out[i] = b
			}
		})
	}
	wg.Wait()
	return out, fail
}
