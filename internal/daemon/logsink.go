package daemon

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// asyncWriter hands log lines to one goroutine that writes them, so that a
// stalled stderr (a full pipe, a stuck journald) never blocks the gate
// reader or a knock worker that logs. It holds at most depth lines; past
// that, lines are dropped and counted, and the count is written as a line
// of its own once the writer catches up.
type asyncWriter struct {
	out     io.Writer
	lines   chan []byte
	dropped atomic.Uint64
	done    chan struct{}

	mu     sync.RWMutex // Write holds it shared, Close exclusively
	closed bool
}

func newAsyncWriter(out io.Writer, depth int) *asyncWriter {
	w := &asyncWriter{out: out, lines: make(chan []byte, depth), done: make(chan struct{})}
	go w.writeLines()
	return w
}

func (w *asyncWriter) writeLines() {
	defer close(w.done)
	for line := range w.lines {
		w.reportDropped()
		w.out.Write(line)
	}
	w.reportDropped()
}

func (w *asyncWriter) reportDropped() {
	if n := w.dropped.Swap(0); n > 0 {
		fmt.Fprintf(w.out, "{\"level\":\"warn\",\"msg\":\"log lines dropped: stderr was too slow\",\"dropped\":%d}\n", n)
	}
}

// Write queues a copy of p; it never blocks.
func (w *asyncWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return w.out.Write(p) // after Close: the last lines of a stop
	}
	select {
	case w.lines <- append([]byte(nil), p...):
	default:
		w.dropped.Add(1)
	}
	return len(p), nil
}

// Sync waits (up to a second) until the queued lines are written.
func (w *asyncWriter) Sync() error {
	for deadline := time.Now().Add(time.Second); len(w.lines) > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	return nil
}

// Close writes what is queued (waiting up to two seconds) and makes later
// writes synchronous.
func (w *asyncWriter) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.lines)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
	}
}
