package main

import (
	"bufio"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sknock/gate"
	"sknock/packet"
	"sknock/pki"
	"sknock/queue"
)

// queueSample is one reading of a queue's kernel counters and an
// interface's received packets.
type queueSample struct {
	at      time.Time
	handled uint64 // packets given to the reader and not waiting any more
	qdrop   uint64
	udrop   uint64
	rx      uint64
}

// readQueue reads queue q's counters through the queue package's parser.
func readQueue(q int) (handled, qdrop, udrop uint64, ok bool) {
	st, err := queue.ReadKernelStats(uint16(q))
	if err != nil {
		return
	}
	// id sequence counts every packet sent to the reader, the
	// user-dropped ones included; waiting ones have no verdict yet.
	return uint64(st.IDSequence) - st.UserDropped - uint64(st.Waiting), st.QueueDropped, st.UserDropped, true
}

func readRx(iface string) uint64 {
	data, _ := os.ReadFile("/sys/class/net/" + iface + "/statistics/rx_packets")
	n, _ := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	return n
}

// queueRate samples the gate queue and the receiving interface every
// `every` until the traffic stopped for `idle` (or the bound), and prints
// the verdict rate over the window in which verdicts were given and the
// arrival rate over the window in which packets arrived.
func queueRate(args []string) error {
	fs := flag.NewFlagSet("qrate", flag.ExitOnError)
	q := fs.Int("queue", 101, "NFQUEUE number; -1: interface only")
	iface := fs.String("iface", "", "receiving interface")
	every := fs.Duration("every", 5*time.Millisecond, "sampling period")
	idle := fs.Duration("idle", time.Second, "stop after this long without traffic once it started")
	limit := fs.Duration("for", 60*time.Second, "stop after this long in any case")
	prefix := fs.String("prefix", "q", "output key prefix")
	ready := fs.String("ready", "", "file to create once the first sample is taken")
	fs.Parse(args)
	sample := func() queueSample {
		s := queueSample{at: time.Now(), rx: readRx(*iface)}
		if *q >= 0 {
			s.handled, s.qdrop, s.udrop, _ = readQueue(*q)
		}
		return s
	}
	first := sample()
	if *ready != "" {
		os.WriteFile(*ready, nil, 0o644)
	}
	deadline := first.at.Add(*limit)
	prev := first
	var hStart, hEnd, rStart, rEnd queueSample // windows of change
	hStarted, rStarted := false, false
	for time.Now().Before(deadline) {
		time.Sleep(*every)
		s := sample()
		if s.handled != prev.handled {
			if !hStarted {
				hStart, hStarted = prev, true
			}
			hEnd = s
		}
		if s.rx != prev.rx {
			if !rStarted {
				rStart, rStarted = prev, true
			}
			rEnd = s
		}
		prev = s
		lastChange := hEnd.at
		if rEnd.at.After(lastChange) {
			lastChange = rEnd.at
		}
		if (hStarted || rStarted) && s.at.Sub(lastChange) > *idle {
			break
		}
	}
	if hStarted {
		w := hEnd.at.Sub(hStart.at).Seconds()
		kv(*prefix+"_handled", "%d", hEnd.handled-hStart.handled)
		kv(*prefix+"_window_s", "%.3f", w)
		kv(*prefix+"_rate", "%.0f", float64(hEnd.handled-hStart.handled)/w)
	}
	kv(*prefix+"_qdrop", "%d", prev.qdrop-first.qdrop)
	kv(*prefix+"_udrop", "%d", prev.udrop-first.udrop)
	if rStarted {
		w := rEnd.at.Sub(rStart.at).Seconds()
		kv(*prefix+"_rx", "%d", rEnd.rx-rStart.rx)
		kv(*prefix+"_rx_window_s", "%.3f", w)
		kv(*prefix+"_rx_rate", "%.0f", float64(rEnd.rx-rStart.rx)/w)
	}
	return nil
}

// logLine is the part of sknockd's JSON log lines logstats reads.
type logLine struct {
	TS       string            `json:"ts"`
	Msg      string            `json:"msg"`
	Verdict  string            `json:"verdict"`
	Reason   string            `json:"reason"`
	DecideUS *int64            `json:"decide_us"`
	Knocks   map[string]uint64 `json:"knocks"`
	Shed     *uint64           `json:"knock_shed"`
	Outcome  uint64            `json:"knock_outcome_hits"`
	Secret   uint64            `json:"knock_secret_hits"`
}

// logStats reads sknockd's log from line -from on: grants, denials by
// reason, the grant rate between the first and last grant, and the
// percentiles of decide_us over the grants.
func logStats(args []string) error {
	fs := flag.NewFlagSet("logstats", flag.ExitOnError)
	path := fs.String("log", "", "sknockd log file")
	from := fs.Int("from", 0, "skip this many lines")
	prefix := fs.String("prefix", "log", "output key prefix")
	fs.Parse(args)
	f, err := os.Open(*path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var grants int
	var firstTS, lastTS time.Time
	var decide []time.Duration
	denials := map[string]int{}
	for line := 0; sc.Scan(); line++ {
		if line < *from {
			continue
		}
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if l.Msg == "counters" && l.Shed != nil {
			kv(*prefix+"_counter_shed", "%d", *l.Shed)
			kv(*prefix+"_counter_grants", "%d", l.Knocks["none"])
			kv(*prefix+"_counter_outcome_hits", "%d", l.Outcome)
			kv(*prefix+"_counter_secret_hits", "%d", l.Secret)
		}
		if l.Msg != "knock" {
			continue
		}
		if l.Verdict != "grant" {
			denials[l.Reason]++
			continue
		}
		grants++
		ts, err := time.Parse("2006-01-02T15:04:05.000Z0700", l.TS)
		if err == nil {
			if firstTS.IsZero() {
				firstTS = ts
			}
			lastTS = ts
		}
		if l.DecideUS != nil {
			decide = append(decide, time.Duration(*l.DecideUS)*time.Microsecond)
		}
	}
	kv(*prefix+"_grants", "%d", grants)
	for r, n := range denials {
		kv(*prefix+"_deny_"+r, "%d", n)
	}
	if w := lastTS.Sub(firstTS).Seconds(); grants > 1 && w > 0 {
		kv(*prefix+"_grant_window_s", "%.3f", w)
		kv(*prefix+"_grant_rate", "%.0f", float64(grants-1)/w)
	}
	if len(decide) > 0 {
		printLatencies(*prefix+"_decide", decide)
	}
	return sc.Err()
}

func rssBytes() uint64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// grantsRSS fills a gate.GrantTable with n live grants (addresses of
// 198.18.0.0/15 times a few ports; nothing is sent) and prints how much
// the process's RSS and Go heap grew, and a lookup's cost at that size.
func grantsRSS(args []string) error {
	fs := flag.NewFlagSet("grants", flag.ExitOnError)
	n := fs.Int("n", 1_000_000, "grants")
	fs.Parse(args)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	rss0 := rssBytes()
	t := gate.NewGrantTable(0)
	until := time.Now().Add(time.Hour)
	base := netip.MustParseAddr("198.18.0.0").As4()
	start := time.Now()
	for i := range *n {
		host := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i%(1<<17))
		a := netip.AddrFrom4([4]byte{byte(host >> 24), byte(host >> 16), byte(host >> 8), byte(host)})
		if t.Add(gate.Grant{Source: a, Proto: packet.TCP, Port: uint16(2000 + i>>17)}, benchCert(i%1000+1), until) != nil {
			return fmt.Errorf("table refused grant %d", i)
		}
	}
	fill := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	rss1 := rssBytes()
	probe := netip.MustParseAddr("198.18.1.1")
	const lookups = 1_000_000
	now := time.Now()
	start = time.Now()
	hits := 0
	for range lookups {
		if t.Allowed(probe, 6, 2000, now) {
			hits++
		}
	}
	kv("grants_n", "%d", t.Len())
	kv("grants_fill_s", "%.2f", fill.Seconds())
	kv("grants_rss_mb", "%.1f", float64(rss1-rss0)/(1<<20))
	kv("grants_heap_mb", "%.1f", float64(after.HeapInuse-before.HeapInuse)/(1<<20))
	kv("grants_lookup_ns", "%.0f", float64(time.Since(start).Nanoseconds())/lookups)
	runtime.KeepAlive(t)
	return nil
}

// writeBigCRL writes a CRL revoking n random 128-bit serials, signed by
// the CA in a `sknock pki init` directory.
func writeBigCRL(args []string) error {
	fs := flag.NewFlagSet("crl", flag.ExitOnError)
	dir := fs.String("dir", "", "CA directory (ca.pem, ca.key)")
	n := fs.Int("n", 1_000_000, "revoked serials")
	out := fs.String("out", "", "CRL file to write (DER)")
	fs.Parse(args)
	certs, err := pki.LoadCertificates(filepath.Join(*dir, "ca.pem"))
	if err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(*dir, "ca.key"))
	if err != nil {
		return err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return errors.New("ca.key: no PEM block")
	}
	var key any
	if block.Type == "EC PRIVATE KEY" {
		key, err = x509.ParseECPrivateKey(block.Bytes)
	} else {
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return errors.New("ca.key: not a signer")
	}
	start := time.Now()
	now := time.Now()
	entries := make([]x509.RevocationListEntry, *n)
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	for i := range entries {
		s, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return err
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: s.Add(s, limit), RevocationTime: now}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, certs[0], signer)
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out, der, 0o644); err != nil {
		return err
	}
	kv("crl_serials", "%d", *n)
	kv("crl_bytes", "%d", len(der))
	kv("crl_make_s", "%.1f", time.Since(start).Seconds())
	return nil
}

// rusage runs a command and prints its wall time and peak RSS.
func rusage(args []string) error {
	fs := flag.NewFlagSet("rusage", flag.ExitOnError)
	prefix := fs.String("prefix", "ru", "output key prefix")
	fs.Parse(args)
	argv := fs.Args()
	if len(argv) == 0 {
		return errors.New("no command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	err := cmd.Run()
	el := time.Since(start)
	if err != nil {
		return err
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	kv(*prefix+"_wall_s", "%.3f", el.Seconds())
	kv(*prefix+"_maxrss_mb", "%.1f", float64(ru.Maxrss)/1024)
	return nil
}

// benchCert returns a distinct CertID for n.
func benchCert(n int) gate.CertID {
	var id gate.CertID
	binary.BigEndian.PutUint32(id[:], uint32(n))
	return id
}
