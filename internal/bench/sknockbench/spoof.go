package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"sknock/internal/bench/spoof"
)

// spoofFlood floods dst's knock ports from random spoofed sources (see
// package spoof): TCP SYNs (to the ports given, e.g. a protected one), random bytes, one captured datagram replayed, or
// distinct knock-shaped datagrams with fresh ephemeral keys.
func spoofFlood(args []string) error {
	fs := flag.NewFlagSet("spoof", flag.ExitOnError)
	dst := fs.String("dst", "", "server address (in 198.18.0.0/15)")
	knockPorts := fs.String("knock-ports", "40000-40100", "UDP knock port range")
	kind := fs.String("kind", "random", "syn (TCP SYNs to the -knock-ports range, e.g. a protected port), random (random bytes), replay (the datagram in -datagram, again and again), mutate (replay with the first ciphertext block randomised on every send: distinct datagrams sharing one ephemeral key), fresh (knock-shaped datagrams with fresh ephemeral keys, made beforehand, sent round robin with the first ciphertext block randomised on every send so that no two are alike), v2badmac (v2-shaped datagrams, header 'a' 2.0.0 and random bytes, so mac1 is wrong; distinct on every send)")
	datagram := fs.String("datagram", "", "replay: file holding the datagram")
	distinct := fs.Int("distinct", 0, "fresh: distinct datagrams made beforehand (default: -n)")
	size := fs.Int("size", 700, "datagram size for random and fresh")
	sources := fs.String("sources", "198.18.64.0/18,198.18.128.0/17,198.19.0.0/16", "prefixes of the spoofed sources, comma-separated, inside 198.18.0.0/15")
	rate := fs.Float64("rate", 30000, "datagrams per second")
	n := fs.Int("n", 300000, "datagrams to send at most")
	limit := fs.Duration("for", 10*time.Second, "stop after this long")
	prefix := fs.String("prefix", "spoof", "output key prefix")
	pfx := fs.String("pfx", "", "replay without -datagram: seal one knock with this client bundle, naming -names")
	pwFile := fs.String("password-file", "", "bundle password file")
	serverCert := fs.String("server-cert", "", "server certificate")
	names := fs.String("names", "198.18.2.2", "replay: the client address the sealed knock names (it is never sent from there)")
	fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dstAddr, err := netip.ParseAddr(*dst)
	if err != nil {
		return err
	}
	first, last, err := portRange(*knockPorts)
	if err != nil {
		return err
	}
	var prefixes []netip.Prefix
	for _, s := range strings.Split(*sources, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		prefixes = append(prefixes, p)
	}
	var payloads [][]byte
	start := time.Now()
	switch *kind {
	case "syn":
	case "random":
		payloads = spoof.RandomPayloads(1024, *size, 1)
	case "replay", "mutate":
		var b []byte
		if *datagram != "" {
			if b, err = os.ReadFile(*datagram); err != nil {
				return err
			}
		} else {
			s, err := loadSealer(*pfx, *pwFile, *serverCert)
			if err != nil {
				return err
			}
			a, err := netip.ParseAddr(*names)
			if err != nil {
				return err
			}
			if b, err = s.seal(0, 2000, a); err != nil {
				return err
			}
		}
		payloads = [][]byte{b}
	case "v2badmac":
		payloads = spoof.RandomPayloads(1024, *size, 2)
		for _, p := range payloads {
			p[0], p[1], p[2], p[3] = 'a', 2, 0, 0
		}
	case "fresh":
		m := *distinct
		if m <= 0 {
			m = *n
		}
		if payloads, err = spoof.FreshPayloads(m, *size); err != nil {
			return err
		}
	default:
		return errors.New("-kind: want syn, random, replay, mutate, fresh or v2badmac")
	}
	kv(*prefix+"_prepare_s", "%.3f", time.Since(start).Seconds())
	res, err := spoof.Flood(ctx, spoof.Config{
		Dst: dstAddr, FirstPort: first, LastPort: last,
		Sources: prefixes, Exclude: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/22")},
		Payloads: payloads, Rate: *rate, N: *n, For: *limit, Seed: uint64(time.Now().UnixNano()),
		Mutate: *kind == "fresh" || *kind == "mutate" || *kind == "v2badmac", SYN: *kind == "syn",
	})
	if err != nil {
		return err
	}
	kv(*prefix+"_sent", "%d", res.Sent)
	kv(*prefix+"_errors", "%d", res.Errors)
	kv(*prefix+"_s", "%.3f", res.Elapsed.Seconds())
	kv(*prefix+"_rate", "%.0f", res.Rate())
	if res.Sent == 0 {
		return fmt.Errorf("sent nothing (%d errors)", res.Errors)
	}
	return nil
}
