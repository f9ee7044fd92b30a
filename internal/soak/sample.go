package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Metrics are the figures the soak samples from sknockd.
type Metrics struct {
	Heap       float64 // go_memstats_heap_inuse_bytes
	NextGC     float64 // go_memstats_next_gc_bytes: (1 + GOGC/100) × the heap live after the last GC
	GCs        float64 // go_gc_duration_seconds_count: GC cycles so far
	FDs        float64 // process_open_fds
	Goroutines float64 // go_goroutines
}

// ParseMetrics reads Metrics from a Prometheus text exposition.
func ParseMetrics(r io.Reader) (m Metrics, err error) {
	want := map[string]*float64{"go_memstats_heap_inuse_bytes": &m.Heap, "go_memstats_next_gc_bytes": &m.NextGC,
		"go_gc_duration_seconds_count": &m.GCs, "process_open_fds": &m.FDs, "go_goroutines": &m.Goroutines}
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
				return Metrics{}, fmt.Errorf("metric %s: %w", name, err)
			}
			found++
		}
	}
	if found != len(want) {
		return Metrics{}, fmt.Errorf("metrics: found %d of the %d wanted (heap in use, next GC, GC count, descriptors, goroutines)", found, len(want))
	}
	return m, sc.Err()
}

// Sampler scrapes sknockd's metrics every Every and reports each sample;
// a failed scrape (sknockd restarting) is skipped.
type Sampler struct {
	URL   string
	Every time.Duration
	Log   *Log
}

// Run samples until ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	client := &http.Client{Timeout: 2 * time.Second}
	for sleepCtx(ctx, s.Every) {
		resp, err := client.Get(s.URL)
		if err != nil {
			continue
		}
		m, err := ParseMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak sample:", err)
			continue
		}
		s.Log.Add(Event{Kind: KindSample, Heap: m.Heap, NextGC: m.NextGC, GCs: m.GCs, FDs: m.FDs, Goroutines: m.Goroutines})
	}
}

// CountLines follows the file at path (sknockd's log, appended across
// restarts) and reports how many lines were added each second, and each
// "rules restored" line at the time it names.
func CountLines(ctx context.Context, path string, log *Log) {
	var off int64
	var partial []byte // a line not yet ended
	buf := make([]byte, 256<<10)
	for sleepCtx(ctx, time.Second) {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var lines int64
		for {
			n, err := f.ReadAt(buf, off)
			off += int64(n)
			partial = append(partial, buf[:n]...)
			for {
				i := bytes.IndexByte(partial, '\n')
				if i < 0 {
					break
				}
				lines++
				if t, ok := restoredAt(partial[:i]); ok {
					log.Add(Event{T: t, Kind: KindRestored})
				}
				partial = partial[i+1:]
			}
			if err != nil || n == 0 {
				break
			}
		}
		partial = append([]byte(nil), partial...)
		f.Close()
		log.Add(Event{Kind: KindLogRate, Count: lines})
	}
}

// restoredAt returns the time of a "rules restored" log line.
func restoredAt(line []byte) (float64, bool) {
	if !bytes.Contains(line, []byte(`"msg":"rules restored"`)) {
		return 0, false
	}
	var l struct {
		TS time.Time `json:"ts"`
	}
	if err := json.Unmarshal(line, &l); err != nil || l.TS.IsZero() {
		return 0, false
	}
	return Unix(l.TS), true
}

// ListenNotify plays the service manager's side of sd_notify: it binds a
// datagram socket at path (NOTIFY_SOCKET) and reports each WATCHDOG=1.
func ListenNotify(ctx context.Context, path string, log *Log) error {
	os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify socket: %w", err)
	}
	go func() { <-ctx.Done(); c.Close() }()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("notify socket: %w", err)
		}
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if line == "WATCHDOG=1" {
				log.Add(Event{Kind: KindWatchdog})
			}
		}
	}
}
