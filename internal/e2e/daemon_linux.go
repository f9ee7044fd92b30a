package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/netns"
)

// Time limits of the daemon's life cycle.
const (
	startTimeout = 10 * time.Second // until "sknockd started"
	stopTimeout  = 5 * time.Second  // after SIGTERM, before SIGKILL
)

// Daemon is a sknockd process running in a Net's server namespace.
// Its methods must be called from the test's goroutine.
type Daemon struct {
	t      testing.TB
	ns     *netns.NS
	bin    string
	Config string // the config file's path

	mu   sync.Mutex
	cur  *process // the current (or last) process
	past []string // logs of earlier processes, for failure reports
}

// process is one run of the binary.
type process struct {
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{} // closed when it exited
	code int           // exit status, valid after done
}

// StartDaemon writes configYAML to a file (see PKI.Config), runs
// `sknockd --config FILE` in n.Server and waits for its "sknockd started"
// log line, failing t with the log if it does not come within 10 s. When
// t ends the daemon gets SIGTERM (SIGKILL after 5 s), and its log is
// written to t.Log if t failed.
func StartDaemon(t testing.TB, n *Net, configYAML string) *Daemon {
	t.Helper()
	bin, _ := BuildBinaries(t)
	path := filepath.Join(t.TempDir(), "sknockd.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{t: t, ns: n.Server, bin: bin, Config: path}
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			d.mu.Lock()
			defer d.mu.Unlock()
			for i, l := range d.past {
				t.Logf("sknockd log (run %d):\n%s", i+1, l)
			}
			if d.cur != nil {
				t.Logf("sknockd log (last run):\n%s", d.cur.log.String())
			}
		}
	})
	d.start()
	return d
}

func (d *Daemon) start() {
	d.t.Helper()
	p := &process{log: &logBuffer{}, done: make(chan struct{})}
	p.cmd = d.ns.Command(context.Background(), d.bin, "--config", d.Config)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		d.t.Fatalf("start sknockd: %v", err)
	}
	go func() {
		p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	d.mu.Lock()
	if d.cur != nil {
		d.past = append(d.past, d.cur.log.String())
	}
	d.cur = p
	d.mu.Unlock()
	if _, err := d.waitLine(0, startTimeout, func(l Line) bool { return l.Msg() == "sknockd started" }); err != nil {
		d.t.Fatalf("sknockd did not start: %v\nlog:\n%s", err, p.log.String())
	}
}

// Logs returns what the current process wrote to stderr and stdout.
func (d *Daemon) Logs() string { return d.proc().log.String() }

// Lines returns the current process's JSON log lines, in order.
func (d *Daemon) Lines() []Line { return d.proc().log.lines() }

// WaitLog waits until a line of the current process contains substr and
// returns it; it fails t with the log after timeout.
func (d *Daemon) WaitLog(substr string, timeout time.Duration) string {
	d.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		for _, l := range strings.Split(d.Logs(), "\n") {
			if strings.Contains(l, substr) {
				return l
			}
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("no log line with %q within %v; log:\n%s", substr, timeout, d.Logs())
		}
	}
}

// WaitLine waits for the first JSON line at index from or later (count
// with len(Lines()) before acting) for which match is true and returns
// it; it fails t with the log after timeout.
func (d *Daemon) WaitLine(from int, timeout time.Duration, match func(Line) bool) Line {
	d.t.Helper()
	l, err := d.waitLine(from, timeout, match)
	if err != nil {
		d.t.Fatalf("%v; log:\n%s", err, d.Logs())
	}
	return l
}

func (d *Daemon) waitLine(from int, timeout time.Duration, match func(Line) bool) (Line, error) {
	p := d.proc()
	for deadline := time.Now().Add(timeout); ; {
		lines := p.log.lines()
		for i := from; i < len(lines); i++ {
			if match(lines[i]) {
				return lines[i], nil
			}
		}
		select {
		case <-p.done:
			// Look once more: the line may have come with the exit.
			lines = p.log.lines()
			for i := from; i < len(lines); i++ {
				if match(lines[i]) {
					return lines[i], nil
				}
			}
			return nil, fmt.Errorf("sknockd exited with status %d before the log line came", p.code)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the log line did not come within %v", timeout)
		}
	}
}

// Signal sends sig to the daemon.
func (d *Daemon) Signal(sig os.Signal) {
	d.t.Helper()
	if err := d.proc().cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal sknockd: %v", err)
	}
}

// Kill9 kills the daemon with SIGKILL and waits for it to be gone.
func (d *Daemon) Kill9() {
	d.t.Helper()
	p := d.proc()
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		d.t.Fatal("sknockd still running 5 s after SIGKILL")
	}
}

// Stop sends SIGTERM, waits up to 5 s (then sends SIGKILL) and returns the
// exit status; -1 means it was killed by a signal. Stopping a stopped
// daemon returns its status again.
func (d *Daemon) Stop() int {
	p := d.proc()
	if p == nil {
		return -1
	}
	select {
	case <-p.done:
		return p.code
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
	}
	return p.code
}

// Exited reports whether the current process has exited, and its status.
func (d *Daemon) Exited() (bool, int) {
	p := d.proc()
	select {
	case <-p.done:
		return true, p.code
	default:
		return false, 0
	}
}

// Restart stops the daemon if it still runs, then starts it again with the
// same config and waits for "sknockd started". Logs and Lines then show
// the new process only.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}

// PID returns the process id of the current (or last) process. The
// daemon runs under `ip netns exec`, which execs it, so this is sknockd's
// own pid, the one a second instance's refusal names.
func (d *Daemon) PID() int { return d.proc().cmd.Process.Pid }

func (d *Daemon) proc() *process {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cur
}

// RunSknockd runs `sknockd ARGS` in ns to completion (killed after
// timeout) and returns its combined output and exit status.
func RunSknockd(t testing.TB, ns *netns.NS, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	bin, _ := BuildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := ns.RunContext(ctx, append([]string{bin}, args...)...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out, 0
	case errors.As(err, &exit):
		return out, exit.ExitCode()
	}
	t.Fatalf("run sknockd %s: %v\n%s", strings.Join(args, " "), err, out)
	return "", 0
}

// Line is one JSON log line of the daemon.
type Line map[string]any

// Msg returns the line's "msg".
func (l Line) Msg() string { return l.String("msg") }

// String returns the field key as text ("" when missing; numbers as JSON).
func (l Line) String(key string) string {
	switch v := l[key].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// logBuffer collects a process's output; it is safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines parses the complete JSON lines so far; other lines are skipped.
func (b *logBuffer) lines() []Line {
	text := b.String()
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	} else {
		return nil
	}
	var out []Line
	for _, s := range strings.Split(text, "\n") {
		var l Line
		if strings.HasPrefix(s, "{") && json.Unmarshal([]byte(s), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}
