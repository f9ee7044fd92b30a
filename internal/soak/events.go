// Package soak is the long-running half of scripts/soak.sh: the client
// population, the ungranted prober, the echo services, the samplers of
// sknockd's metrics and watchdog, and the report that judges a run.
//
// Every part writes what it saw as one JSON event per line (events.go);
// scripts/soak.sh writes its faults (reloads, flushes, restarts,
// revocations, floods) the same way. The report (Analyze) reads them all
// after the run and decides each invariant from them, so the judging is
// plain data processing, tested without root.
package soak

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"time"
)

// Event kinds. The script writes the fault and phase kinds; the Go parts
// write the rest.
const (
	KindPhase      = "phase"       // Name: leak or chaos, at its start
	KindEnd        = "end"         // the run's end
	KindStart      = "start"       // sknockd started (a process launched)
	KindReady      = "ready"       // sknockd logged "sknockd started"
	KindStop       = "stop"        // SIGTERM sent
	KindKill       = "kill"        // SIGKILL sent
	KindReload     = "reload"      // SIGHUP sent; Name: the config (a, b or invalid)
	KindFlush      = "flush"       // another tool flushed or outranked sknock's rules; Name: how
	KindRevoke     = "revoke"      // Client's certificate Gen revoked; Name: crl-file, crl-url or grants
	KindReissue    = "reissue"     // Client given a new certificate, Gen
	KindFlood      = "flood"       // Name: syn, garbage or replay; Dur: its length in seconds
	KindKnock      = "knock"       // one knock and its open check
	KindHeld       = "held"        // a held connection ended (or the run did)
	KindProbe      = "probe"       // the ungranted prober got through
	KindProbeStats = "probe_stats" // the prober's attempt count
	KindSample     = "sample"      // one sample of sknockd's metrics
	KindWatchdog   = "watchdog"    // WATCHDOG=1 received from sknockd
	KindLogRate    = "lograte"     // sknockd's log lines in one second
	KindRestored   = "restored"    // sknockd logged "rules restored" (T: the line's own time)
)

// Event is one line of an events file. T is Unix seconds; the other
// fields depend on Kind and are left out when zero.
type Event struct {
	T      float64 `json:"t"`
	Kind   string  `json:"kind"`
	Name   string  `json:"name,omitempty"`
	Client string  `json:"client,omitempty"`
	Gen    int     `json:"gen,omitempty"`
	Proto  string  `json:"proto,omitempty"`
	Port   int     `json:"port,omitempty"`
	Src    string  `json:"src,omitempty"`   // knock, held: the gatekeeper's address used; probe: the prober's address:port
	Local  string  `json:"local,omitempty"` // held: the client's address as the gatekeeper sees it
	// Revoke by an operator: the grants sknockd said it ended, as
	// "SOURCE PROTO/PORT".
	Ended []string `json:"ended,omitempty"`
	// Knock: Sent is when the knock process exited, OK whether the port
	// opened, Dur how long after Sent it did (seconds).
	Sent float64 `json:"sent,omitempty"`
	OK   bool    `json:"ok,omitempty"`
	Dur  float64 `json:"dur,omitempty"`
	// Held: Opened, LastOK (the last verified echo), Cause (planned, cut,
	// corrupt, end), Bytes verified, Lost (sent, never echoed, on a cut),
	// Corrupt (echoed wrong).
	Opened  float64 `json:"opened,omitempty"`
	LastOK  float64 `json:"last_ok,omitempty"`
	Cause   string  `json:"cause,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Lost    int64   `json:"lost,omitempty"`
	Corrupt int64   `json:"corrupt,omitempty"`
	// Sample: sknockd's Metrics. Lograte: Count lines.
	Heap       float64 `json:"heap,omitempty"`
	NextGC     float64 `json:"next_gc,omitempty"`
	GCs        float64 `json:"gcs,omitempty"`
	FDs        float64 `json:"fds,omitempty"`
	Goroutines float64 `json:"goroutines,omitempty"`
	Count      int64   `json:"count,omitempty"`
}

// Unix returns t as an event time.
func Unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// Log appends events to one file, one JSON object a line; safe for
// concurrent use.
type Log struct {
	mu sync.Mutex
	w  *bufio.Writer
	f  *os.File
}

// OpenLog opens (appending) the events file at path.
func OpenLog(path string) (*Log, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open events file: %w", err)
	}
	return &Log{w: bufio.NewWriter(f), f: f}, nil
}

// Add writes e, stamping it now when its T is zero, and flushes.
func (l *Log) Add(e Event) {
	if e.T == 0 {
		e.T = Unix(time.Now())
	}
	b, _ := json.Marshal(e)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(append(b, '\n'))
	l.w.Flush()
}

// Close flushes and closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return errors.Join(l.w.Flush(), l.f.Close())
}

// ReadEvents reads every events file named and returns their events
// sorted by time. A line that does not parse is an error naming it.
func ReadEvents(paths ...string) ([]Event, error) {
	var all []Event
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		evs, err := decodeEvents(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read events %s: %w", p, err)
		}
		all = append(all, evs...)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].T < all[j].T })
	return all, nil
}

func decodeEvents(r io.Reader) ([]Event, error) {
	var out []Event
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
