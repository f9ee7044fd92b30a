package main

import (
	"strings"
	"testing"
	"time"
)

// stuckWriter blocks every write until released, like a full pipe.
type stuckWriter struct {
	release chan struct{}
	got     syncBuffer
}

func (s *stuckWriter) Write(p []byte) (int, error) {
	<-s.release
	return s.got.Write(p)
}

func TestAsyncWriterNeverBlocksAndCountsDrops(t *testing.T) {
	out := &stuckWriter{release: make(chan struct{})}
	w := newAsyncWriter(out, 4)
	start := time.Now()
	for range 100 {
		w.Write([]byte("{\"msg\":\"line\"}\n"))
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("100 writes to a stuck stderr took %v", took)
	}
	close(out.release)
	w.Close()
	got := out.got.String()
	// At most the queue (4) plus the line in the writer's hands got through.
	if n := strings.Count(got, "\"msg\":\"line\""); n < 1 || n > 5 {
		t.Errorf("%d lines written, want 1 to 5", n)
	}
	if !strings.Contains(got, "log lines dropped") {
		t.Errorf("no drop report in:\n%s", got)
	}
}
