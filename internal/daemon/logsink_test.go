package daemon

import (
	"strings"
	"testing"
	"time"

	"sknock/internal/testenv"
)

// stuckWriter blocks every write until released, like a full pipe; entered
// receives once per write that started.
type stuckWriter struct {
	release chan struct{}
	entered chan struct{}
	got     testenv.SyncBuffer
}

func (s *stuckWriter) Write(p []byte) (int, error) {
	s.entered <- struct{}{}
	<-s.release
	return s.got.Write(p)
}

// TestAsyncWriterNeverBlocksAndCountsDrops stalls the writer goroutine on
// the first line, then writes 99 more: all return while it is stuck, the
// queue keeps 4, and the 95 others are counted and reported as dropped.
func TestAsyncWriterNeverBlocksAndCountsDrops(t *testing.T) {
	const depth = 4
	out := &stuckWriter{release: make(chan struct{}), entered: make(chan struct{}, 100)}
	w := newAsyncWriter(out, depth)
	line := []byte("{\"msg\":\"line\"}\n")
	w.Write(line)
	<-out.entered // the writer holds line 1 and is stuck in out.Write
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for range 99 {
			w.Write(line)
		}
	}()
	select {
	case <-wrote:
	case <-time.After(10 * time.Second): // only ends a test that would hang
		t.Fatal("Write blocked on a stuck stderr")
	}
	close(out.release)
	w.Close()
	got := out.got.String()
	if n := strings.Count(got, "\"msg\":\"line\""); n != 1+depth {
		t.Errorf("%d lines written, want %d (the one in hand and a full queue)", n, 1+depth)
	}
	if want := "\"dropped\":95}"; !strings.Contains(got, want) {
		t.Errorf("no drop report with %s in:\n%s", want, got)
	}
}
