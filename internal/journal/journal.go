// Package journal gives sknockd's stderr lines their journald priority.
// Under systemd, stderr is a stream to journald (JOURNAL_STREAM names it),
// and every line lands at the unit's default priority (info) unless it
// starts with a syslog-style prefix <N>, which journald strips and keeps
// as PRIORITY=N. The lines stay JSON; `journalctl -p err` then finds the
// errors.
package journal

import (
	"bytes"
	"io"
	"os"
	"sync"
)

// The priorities used (sd-daemon.h).
const (
	PriorityErr     = 3
	PriorityWarning = 4
	PriorityInfo    = 6
	PriorityDebug   = 7
)

// Stderr returns os.Stderr, wrapped by NewWriter when it is connected to
// the journal (JOURNAL_STREAM names its device and inode).
func Stderr() io.Writer {
	if connected(os.Getenv("JOURNAL_STREAM"), os.Stderr) {
		return NewWriter(os.Stderr)
	}
	return os.Stderr
}

// Writer prefixes each line written to it with its priority, <3> to <7>.
// Each Write is one line or more, each whole, as zap and fmt.Fprintf
// write them. A line's priority comes from its text:
//
//   - a JSON log line by its level: {"level":"debug|info|warn|error",...}
//   - "sknockd: warning: ..." (the start-up checks' warnings): warning
//   - any other "sknockd: ..." (a refusal to start, a failed command): err
//   - anything else: info
//
// It reuses one buffer, so it allocates nothing once warm; it is safe for
// concurrent use.
type Writer struct {
	mu  sync.Mutex
	out io.Writer
	buf []byte
}

// NewWriter returns a Writer onto out.
func NewWriter(out io.Writer) *Writer { return &Writer{out: out} }

// Write writes p with a priority prefix before each line.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = w.buf[:0]
	for rest := p; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		w.buf = append(w.buf, '<', '0'+byte(Priority(line)), '>')
		w.buf = append(w.buf, line...)
	}
	if _, err := w.out.Write(w.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Priority is the journal priority of one line (see Writer).
func Priority(line []byte) int {
	const levelKey = `{"level":"`
	switch {
	case bytes.HasPrefix(line, []byte(levelKey)):
		level := line[len(levelKey):]
		switch {
		case bytes.HasPrefix(level, []byte(`debug"`)):
			return PriorityDebug
		case bytes.HasPrefix(level, []byte(`info"`)):
			return PriorityInfo
		case bytes.HasPrefix(level, []byte(`warn"`)):
			return PriorityWarning
		}
		return PriorityErr // error, dpanic, panic, fatal
	case bytes.HasPrefix(line, []byte("sknockd: warning:")):
		return PriorityWarning
	case bytes.HasPrefix(line, []byte("sknockd: ")):
		return PriorityErr
	}
	return PriorityInfo
}
