package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
)

// tsField matches the time stamp, which differs between two lines.
var tsField = regexp.MustCompile(`"ts":"[^"]*",`)

// logValuer is resolved by the handler before it converts the value.
type logValuer struct{}

func (logValuer) LogValue() slog.Value { return slog.IntValue(7) }

func TestZapHandlerWritesWhatZapWould(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		give []slog.Attr
		want []zap.Field // as sknockd wrote them with zap directly
	}{
		{name: "string", give: []slog.Attr{slog.String("verdict", "grant")}, want: []zap.Field{zap.String("verdict", "grant")}},
		{name: "int64", give: []slog.Attr{slog.Int64("decide_us", 412)}, want: []zap.Field{zap.Int64("decide_us", 412)}},
		{name: "uint64", give: []slog.Attr{slog.Uint64("port", 2000)}, want: []zap.Field{zap.Uint16("port", 2000)}},
		{name: "float64", give: []slog.Attr{slog.Float64("skew_seconds", -0.25), slog.Float64("open_seconds", 15)}, want: []zap.Field{zap.Float64("skew_seconds", -0.25), zap.Float64("open_seconds", 15)}},
		{name: "bool", give: []slog.Attr{slog.Bool("audit", true)}, want: []zap.Field{zap.Bool("audit", true)}},
		{name: "duration", give: []slog.Attr{slog.Duration("open_duration", 15*time.Second)}, want: []zap.Field{zap.Duration("open_duration", 15*time.Second)}},
		{name: "time", give: []slog.Attr{slog.Time("crl_next_update", at)}, want: []zap.Field{zap.Time("crl_next_update", at)}},
		{name: "stringer", give: []slog.Attr{slog.Any("source", netip.MustParseAddr("fd00:5e::2"))}, want: []zap.Field{zap.Stringer("source", netip.MustParseAddr("fd00:5e::2"))}},
		{name: "error", give: []slog.Attr{slog.Any("error", errors.New("load CRL: gone"))}, want: []zap.Field{zap.Error(errors.New("load CRL: gone"))}},
		{name: "map", give: []slog.Attr{slog.Any("knocks", map[string]uint64{"none": 2, "replay": 1})}, want: []zap.Field{zap.Any("knocks", map[string]uint64{"none": 2, "replay": 1})}},
		{name: "log valuer", give: []slog.Attr{slog.Any("n", logValuer{})}, want: []zap.Field{zap.Int64("n", 7)}},
		{name: "group flattened", give: []slog.Attr{slog.Group("grant", slog.Int("port", 22), slog.Group("to", slog.String("ip", "198.18.0.2")))}, want: []zap.Field{zap.Int("grant.port", 22), zap.String("grant.to.ip", "198.18.0.2")}},
		{name: "keyless group inlined", give: []slog.Attr{slog.Group("", slog.Int("port", 22))}, want: []zap.Field{zap.Int("port", 22)}},
		{name: "empty attribute and group dropped", give: []slog.Attr{{}, slog.Group("none"), slog.Int("port", 22)}, want: []zap.Field{zap.Int("port", 22)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var direct, bridged bytes.Buffer
			newLogger("info", &direct).Info("knock", tt.want...)
			slog.New(newZapHandler(newLogger("info", &bridged).Core())).LogAttrs(context.Background(), slog.LevelInfo, "knock", tt.give...)
			want := tsField.ReplaceAllString(direct.String(), "")
			got := tsField.ReplaceAllString(bridged.String(), "")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("line (-zap +slog):\n%s", diff)
			}
		})
	}
}

func TestZapHandlerLevels(t *testing.T) {
	tests := []struct {
		name      string
		zapLevel  string // log.level
		give      slog.Level
		wantLevel string // "" when nothing is written
	}{
		{name: "debug at debug", zapLevel: "debug", give: slog.LevelDebug, wantLevel: "debug"},
		{name: "below debug at debug", zapLevel: "debug", give: slog.LevelDebug - 4, wantLevel: "debug"},
		{name: "debug at info", zapLevel: "info", give: slog.LevelDebug, wantLevel: ""},
		{name: "info at info", zapLevel: "info", give: slog.LevelInfo, wantLevel: "info"},
		{name: "between info and warn", zapLevel: "info", give: slog.LevelInfo + 2, wantLevel: "info"},
		{name: "info at warn", zapLevel: "warn", give: slog.LevelInfo, wantLevel: ""},
		{name: "warn at warn", zapLevel: "warn", give: slog.LevelWarn, wantLevel: "warn"},
		{name: "warn at error", zapLevel: "error", give: slog.LevelWarn, wantLevel: ""},
		{name: "error at error", zapLevel: "error", give: slog.LevelError, wantLevel: "error"},
		{name: "above error", zapLevel: "error", give: slog.LevelError + 4, wantLevel: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			log := slog.New(newZapHandler(newLogger(tt.zapLevel, &out).Core()))
			if got := log.Enabled(context.Background(), tt.give); got != (tt.wantLevel != "") {
				t.Errorf("Enabled = %v at log.level %s", got, tt.zapLevel)
			}
			log.Log(context.Background(), tt.give, "knock")
			var gotLevel string
			if out.Len() > 0 {
				var line struct{ Level string }
				if err := json.Unmarshal(out.Bytes(), &line); err != nil {
					t.Fatalf("parse %q: %v", out.String(), err)
				}
				gotLevel = line.Level
			}
			if gotLevel != tt.wantLevel {
				t.Errorf("written at %q, want %q (line %q)", gotLevel, tt.wantLevel, out.String())
			}
		})
	}
}

func TestZapHandlerWithAttrsAndGroup(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newZapHandler(newLogger("info", &out).Core()))
	log.With("queue", 101).WithGroup("grant").With(slog.Uint64("port", 22)).Info("opened", "source", "198.18.0.2")
	want := `{"level":"info","msg":"opened","queue":101,"grant.port":22,"grant.source":"198.18.0.2"}` + "\n"
	if diff := cmp.Diff(want, tsField.ReplaceAllString(out.String(), "")); diff != "" {
		t.Errorf("line (-want +got):\n%s", diff)
	}
}

// TestDaemonLogLineTypes checks the gate's lines as sknockd writes them:
// the keys in order (scripts grep for `"msg":"knock","verdict":"grant"`)
// and the JSON type of every value (bench reads decide_us as a number).
func TestDaemonLogLineTypes(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	logs := &syncBuffer{}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan int, 1)
	go func() { done <- serveWith(ctx, &cfg, make(chan os.Signal), logs, f.deps()) }()
	waitFor(t, logs, `"msg":"sknockd started"`, 1)
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	waitFor(t, logs, `"verdict":"grant"`, 1)
	synVerdict(t, f, "198.18.0.3")
	waitFor(t, logs, `"msg":"gate denied"`, 1)
	stop()
	<-done

	tests := []struct {
		msg  string
		want [][2]string // key, JSON type
	}{
		{msg: "knock", want: [][2]string{
			{"level", "string"}, {"ts", "string"}, {"msg", "string"},
			{"verdict", "string"}, {"source", "string"}, {"decide_us", "number"},
			{"proto", "string"}, {"port", "number"}, {"client_ip", "string"},
			{"skew_seconds", "number"}, {"subject", "string"}, {"serial", "string"},
			{"open_seconds", "number"},
		}},
		{msg: "gate denied", want: [][2]string{
			{"level", "string"}, {"ts", "string"}, {"msg", "string"},
			{"source", "string"}, {"proto", "string"}, {"port", "number"},
			{"verdict", "string"}, {"suppressed_before", "number"},
		}},
	}
	for _, tt := range tests {
		line := findLine(t, logs.String(), `"msg":"`+tt.msg+`"`)
		if diff := cmp.Diff(tt.want, jsonShape(t, line)); diff != "" {
			t.Errorf("%s line %s: keys and types (-want +got):\n%s", tt.msg, line, diff)
		}
	}
}

// findLine returns the first line of logs containing substr.
func findLine(t *testing.T, logs, substr string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, substr) {
			return line
		}
	}
	t.Fatalf("no %s line in the log:\n%s", substr, logs)
	return ""
}

// jsonShape returns the keys of a flat JSON object in order, each with
// the JSON type of its value.
func jsonShape(t *testing.T, line string) [][2]string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	var shape [][2]string
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			t.Fatalf("read key of %q: %v", line, err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatalf("read %v of %q: %v", key, line, err)
		}
		kind := "number"
		switch raw[0] {
		case '"':
			kind = "string"
		case '{':
			kind = "object"
		case '[':
			kind = "array"
		case 't', 'f':
			kind = "bool"
		case 'n':
			kind = "null"
		}
		shape = append(shape, [2]string{key.(string), kind})
	}
	return shape
}
