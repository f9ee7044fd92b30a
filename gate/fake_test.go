package gate

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// logRecorder is a slog.Handler that keeps every record, for tests that
// check what the engine logs.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// WithAttrs and WithGroup are not supported: the engine logs through a
// plain logger.
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { panic("logRecorder: no WithAttrs") }
func (h *logRecorder) WithGroup(string) slog.Handler      { panic("logRecorder: no WithGroup") }

// lines returns the records so far as maps of attribute values by key,
// with the message under "msg" and the level under "level".
func (h *logRecorder) lines() []map[string]slog.Value {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]map[string]slog.Value, 0, len(h.records))
	for _, r := range h.records {
		line := map[string]slog.Value{
			"msg":   slog.StringValue(r.Message),
			"level": slog.StringValue(r.Level.String()),
		}
		r.Attrs(func(a slog.Attr) bool {
			line[a.Key] = a.Value
			return true
		})
		out = append(out, line)
	}
	return out
}
