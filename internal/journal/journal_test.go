package journal

import (
	"bytes"
	"fmt"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestWriterPrefixesEachLineByLevel(t *testing.T) {
	tests := []struct {
		name, give, want string
	}{
		{name: "error", give: `{"level":"error","msg":"reload refused"}` + "\n", want: `<3>{"level":"error","msg":"reload refused"}` + "\n"},
		{name: "warn", give: `{"level":"warn","msg":"crl fetch failed"}` + "\n", want: `<4>{"level":"warn","msg":"crl fetch failed"}` + "\n"},
		{name: "info", give: `{"level":"info","msg":"knock"}` + "\n", want: `<6>{"level":"info","msg":"knock"}` + "\n"},
		{name: "debug", give: `{"level":"debug","msg":"x"}` + "\n", want: `<7>{"level":"debug","msg":"x"}` + "\n"},
		{name: "fatal", give: `{"level":"fatal","msg":"x"}` + "\n", want: `<3>{"level":"fatal","msg":"x"}` + "\n"},
		{name: "refusal to start", give: "sknockd: crl.file: no CRL\n", want: "<3>sknockd: crl.file: no CRL\n"},
		{name: "check warning", give: "sknockd: warning: no CRL\n", want: "<4>sknockd: warning: no CRL\n"},
		{name: "other text", give: "hello\n", want: "<6>hello\n"},
		{name: "two lines in one write", give: "sknockd: a\n{\"level\":\"info\"}\n", want: "<3>sknockd: a\n<6>{\"level\":\"info\"}\n"},
		{name: "no newline", give: "sknockd: a", want: "<3>sknockd: a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			n, err := NewWriter(&out).Write([]byte(tt.give))
			if err != nil || n != len(tt.give) || out.String() != tt.want {
				t.Errorf("Write(%q) = %d, %v, wrote %q; want %q", tt.give, n, err, out.String(), tt.want)
			}
		})
	}
}

// TestZapLinesGetTheirPriority runs the daemon's kind of logger (zap's
// JSON encoder, level first) through a Writer.
func TestZapLinesGetTheirPriority(t *testing.T) {
	var out bytes.Buffer
	enc := zap.NewProductionEncoderConfig()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(NewWriter(&out)), zap.DebugLevel))
	log.Error("reload refused", zap.String("key", "gate.policy"))
	log.Warn("crl fetch failed")
	log.Info("knock")
	var prefixes []string
	for line := range bytes.Lines(out.Bytes()) {
		prefixes = append(prefixes, string(line[:3]))
	}
	if fmt.Sprint(prefixes) != "[<3> <4> <6>]" {
		t.Errorf("prefixes %v, want [<3> <4> <6>]:\n%s", prefixes, out.String())
	}
}

func TestWriterAllocatesNothingWhenWarm(t *testing.T) {
	w := NewWriter(&discard{})
	line := []byte(`{"level":"info","msg":"knock","source":"198.18.0.2"}` + "\n")
	w.Write(line)
	if n := testing.AllocsPerRun(100, func() { w.Write(line) }); n != 0 {
		t.Errorf("%v allocations per line, want 0", n)
	}
}

type discard struct{}

func (*discard) Write(p []byte) (int, error) { return len(p), nil }
