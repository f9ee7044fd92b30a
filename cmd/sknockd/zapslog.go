package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// zapHandler is a slog.Handler that writes each record as an entry of a
// zap core, so packages that log through log/slog (gate, which the client
// also links and so cannot pull zap in) write the daemon's JSON lines.
//
// Levels map down to the nearest zap level: below Info is Debug, then
// Info, Warn, and Error from slog.LevelError up; Enabled asks the core, so
// the daemon's log.level applies. Attributes become zap fields of the same
// type (string, int64, uint64, float64, bool, duration, time), so numbers
// stay numbers in the JSON; an error value becomes an error field, a
// fmt.Stringer a string, anything else zap.Any. Groups are flattened:
// attribute b in group a is written as "a.b", not as a nested object.
// A record's zero time is written as the time it was handled.
//
// zap reports a failed write to the core's own error output, if any, not
// to Handle's caller; slog.Logger would ignore the error anyway.
type zapHandler struct {
	core   zapcore.Core
	prefix string // the open groups as "a.b.", "" at top level
}

// newZapHandler returns a handler writing to core.
func newZapHandler(core zapcore.Core) *zapHandler {
	return &zapHandler{core: core}
}

// Enabled reports whether the core writes entries at level l.
func (h *zapHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.core.Enabled(zapLevel(l))
}

// Handle writes r as one zap entry.
func (h *zapHandler) Handle(_ context.Context, r slog.Record) error {
	at := r.Time
	if at.IsZero() {
		at = time.Now()
	}
	ce := h.core.Check(zapcore.Entry{Level: zapLevel(r.Level), Time: at, Message: r.Message}, nil)
	if ce == nil {
		return nil
	}
	fields := make([]zapcore.Field, 0, r.NumAttrs())
	r.Attrs(func(a slog.Attr) bool {
		fields = appendZapField(fields, h.prefix, a)
		return true
	})
	ce.Write(fields...)
	return nil
}

// WithAttrs returns a handler whose entries carry attrs too.
func (h *zapHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var fields []zapcore.Field
	for _, a := range attrs {
		fields = appendZapField(fields, h.prefix, a)
	}
	if len(fields) == 0 {
		return h
	}
	return &zapHandler{core: h.core.With(fields), prefix: h.prefix}
}

// WithGroup returns a handler that prefixes later attributes' keys with
// name and a dot.
func (h *zapHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &zapHandler{core: h.core, prefix: h.prefix + name + "."}
}

// zapLevel maps a slog level to the zap level at or below it.
func zapLevel(l slog.Level) zapcore.Level {
	switch {
	case l < slog.LevelInfo:
		return zapcore.DebugLevel
	case l < slog.LevelWarn:
		return zapcore.InfoLevel
	case l < slog.LevelError:
		return zapcore.WarnLevel
	}
	return zapcore.ErrorLevel
}

// appendZapField appends a as zap fields keyed prefix+a.Key: one for a
// value, one per member for a group (flattened), none for an empty
// attribute or group, as slog handlers must.
func appendZapField(fields []zapcore.Field, prefix string, a slog.Attr) []zapcore.Field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fields
	}
	key := prefix + a.Key
	v := a.Value
	switch v.Kind() {
	case slog.KindString:
		return append(fields, zap.String(key, v.String()))
	case slog.KindInt64:
		return append(fields, zap.Int64(key, v.Int64()))
	case slog.KindUint64:
		return append(fields, zap.Uint64(key, v.Uint64()))
	case slog.KindFloat64:
		return append(fields, zap.Float64(key, v.Float64()))
	case slog.KindBool:
		return append(fields, zap.Bool(key, v.Bool()))
	case slog.KindDuration:
		return append(fields, zap.Duration(key, v.Duration()))
	case slog.KindTime:
		return append(fields, zap.Time(key, v.Time()))
	case slog.KindGroup:
		inner := prefix // a group without a key is inlined
		if a.Key != "" {
			inner = key + "."
		}
		for _, m := range v.Group() {
			fields = appendZapField(fields, inner, m)
		}
		return fields
	}
	switch x := v.Any().(type) {
	case error:
		return append(fields, zap.NamedError(key, x))
	case fmt.Stringer:
		return append(fields, zap.Stringer(key, x))
	}
	return append(fields, zap.Any(key, v.Any()))
}
