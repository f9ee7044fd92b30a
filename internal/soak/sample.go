package soak

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// ParseMetrics reads sknockd's heap in use, open descriptors and
// goroutines from a Prometheus text exposition.
func ParseMetrics(r io.Reader) (heap, fds, goroutines float64, err error) {
	want := map[string]*float64{"go_memstats_heap_inuse_bytes": &heap, "process_open_fds": &fds, "go_goroutines": &goroutines}
	found := 0
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if p := want[name]; ok && p != nil {
			if *p, err = strconv.ParseFloat(strings.TrimSpace(value), 64); err != nil {
				return 0, 0, 0, fmt.Errorf("metric %s: %w", name, err)
			}
			found++
		}
	}
	if found != len(want) {
		return 0, 0, 0, fmt.Errorf("metrics: found %d of go_memstats_heap_inuse_bytes, process_open_fds, go_goroutines", found)
	}
	return heap, fds, goroutines, sc.Err()
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
		heap, fds, gr, err := ParseMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			fmt.Fprintln(os.Stderr, "soak sample:", err)
			continue
		}
		s.Log.Add(Event{Kind: KindSample, Heap: heap, FDs: fds, Goroutines: gr})
	}
}

// CountLines follows the file at path (sknockd's log, appended across
// restarts) and reports how many lines were added each second.
func CountLines(ctx context.Context, path string, log *Log) {
	var off int64
	buf := make([]byte, 256<<10)
	for sleepCtx(ctx, time.Second) {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var lines int64
		for {
			n, err := f.ReadAt(buf, off)
			lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
			off += int64(n)
			if err != nil || n == 0 {
				break
			}
		}
		f.Close()
		log.Add(Event{Kind: KindLogRate, Count: lines})
	}
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
