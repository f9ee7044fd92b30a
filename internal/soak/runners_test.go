package soak

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// freePort returns a TCP and UDP port free on loopback just now.
func freePort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		u.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// startEcho serves echo on one fresh port until the test ends.
func startEcho(t *testing.T, fault string) int {
	t.Helper()
	port := freePort(t)
	e := &Echo{TCP: []int{port}, UDP: []int{port}, Fault: fault, FaultAfter: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// Wait until it accepts.
	for range 100 {
		if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			c.Close()
			return port
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("echo did not start")
	return 0
}

// runPopulation runs one holding client against port on loopback, with
// `true` for the knock command, for d, and returns its events.
func runPopulation(t *testing.T, port int, d time.Duration) []Event {
	t.Helper()
	dir := t.TempDir()
	cur := filepath.Join(dir, "c.cur")
	if err := os.WriteFile(cur, []byte("3 /nonexistent.pfx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	evPath := filepath.Join(dir, "c.events")
	log, err := OpenLog(evPath)
	if err != nil {
		t.Fatal(err)
	}
	truePath, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1)")
	}
	p := &Population{
		Clients: []Client{{Name: "c", Current: cur, Hosts: []string{"127.0.0.1"}, TCP: []int{port}, UDP: []int{port}, Hold: true}},
		Knock:   func(Client, string, string, []string) []string { return []string{truePath} },
		MinGap:  20 * time.Millisecond, MaxGap: 40 * time.Millisecond,
		HoldMin: 10 * time.Second, HoldMax: 10 * time.Second,
		CheckFor: time.Second, EchoEvery: 20 * time.Millisecond, Log: log,
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	p.Run(ctx)
	log.Close()
	evs, err := ReadEvents(evPath)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestPopulationKnocksChecksAndHolds(t *testing.T) {
	port := startEcho(t, "")
	evs := runPopulation(t, port, 700*time.Millisecond)
	var knocks, held int
	for _, e := range evs {
		switch e.Kind {
		case KindKnock:
			knocks++
			if !e.OK || e.Gen != 3 || e.Client != "c" {
				t.Errorf("knock %+v: want opened, generation 3", e)
			}
		case KindHeld:
			held++
			if e.Cause != "end" || e.Bytes == 0 || e.Lost != 0 || e.Corrupt != 0 {
				t.Errorf("held %+v: want ended by the run with bytes echoed, none lost or corrupted", e)
			}
		}
	}
	if knocks < 4 || held != 1 {
		t.Errorf("%d knock events and %d held, want at least 4 (tcp and udp, twice) and 1", knocks, held)
	}
}

func TestPopulationSeesEchoFaults(t *testing.T) {
	for _, fault := range []string{"corrupt", "cut"} {
		t.Run(fault, func(t *testing.T) {
			port := startEcho(t, fault)
			evs := runPopulation(t, port, 1200*time.Millisecond)
			found := false
			for _, e := range evs {
				if e.Kind == KindHeld && e.Cause == fault {
					found = true
					if fault == "corrupt" && e.Corrupt == 0 {
						t.Errorf("held %+v: a corrupt echo counted no corrupt bytes", e)
					}
				}
			}
			if !found {
				t.Errorf("no held connection ended %q: %+v", fault, evs)
			}
		})
	}
}

func TestProberReportsWhatGetsThrough(t *testing.T) {
	open := startEcho(t, "")
	closed := freePort(t)
	dir := t.TempDir()
	log, err := OpenLog(filepath.Join(dir, "p.events"))
	if err != nil {
		t.Fatal(err)
	}
	// From another loopback address: a UDP socket of 127.0.0.1 could
	// pick the closed port as its own and hear itself.
	src, lo := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")
	p := &Prober{Sources: []netip.Addr{src}, Targets: []netip.Addr{lo}, TCP: []int{open, closed}, UDP: []int{open, closed}, Timeout: 50 * time.Millisecond, Log: log}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	p.Run(ctx)
	log.Close()
	evs, err := ReadEvents(filepath.Join(dir, "p.events"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	var tries int64
	for _, e := range evs {
		switch e.Kind {
		case KindProbe:
			got[e.Proto+"/"+strconv.Itoa(e.Port)] = true
		case KindProbeStats:
			tries += e.Count
		}
	}
	want := map[string]bool{"tcp/" + strconv.Itoa(open): true, "udp/" + strconv.Itoa(open): true}
	if len(got) != 2 || !got["tcp/"+strconv.Itoa(open)] || !got["udp/"+strconv.Itoa(open)] {
		t.Errorf("probes got through to %v, want %v", got, want)
	}
	if tries == 0 {
		t.Error("no attempts counted")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 23
go_memstats_heap_inuse_bytes 1.8337792e+07
go_memstats_next_gc_bytes 2.4e+07
go_gc_duration_seconds_count 12
process_open_fds 16
sknock_grants 80
`
	m, err := ParseMetrics(strings.NewReader(text))
	if want := (Metrics{Heap: 1.8337792e+07, NextGC: 2.4e+07, GCs: 12, FDs: 16, Goroutines: 23}); err != nil || m != want {
		t.Errorf("ParseMetrics = %+v, %v; want %+v", m, err, want)
	}
	if _, err := ParseMetrics(strings.NewReader("go_goroutines 3\n")); err == nil {
		t.Error("ParseMetrics of a partial exposition: no error")
	}
}

func TestEventsRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.events"), filepath.Join(dir, "b.events")
	for i, path := range []string{a, b} {
		log, err := OpenLog(path)
		if err != nil {
			t.Fatal(err)
		}
		log.Add(Event{T: float64(2 - i), Kind: KindKnock, Client: "x", Sent: 1.5, OK: true})
		log.Close()
	}
	evs, err := ReadEvents(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].T != 1 || evs[1].T != 2 || !evs[0].OK || evs[0].Client != "x" {
		t.Errorf("ReadEvents = %+v, want two knocks sorted by time", evs)
	}
	if err := os.WriteFile(a, []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadEvents(a); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("ReadEvents of a bad line: %v, want an error naming line 1", err)
	}
}

func TestCountLinesCountsAndFindsRestores(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "sknockd.log")
	lines := `{"level":"info","ts":"2026-12-07T13:30:00.000Z","msg":"sknockd started"}
{"level":"error","ts":"2026-12-07T13:30:01.250Z","msg":"rules restored","family":"iptables"}
{"level":"info","ts":"2026-12-07T13:30:02.000Z","msg":"knock"}
`
	if err := os.WriteFile(logPath, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	evPath := filepath.Join(dir, "s.events")
	log, err := OpenLog(evPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	CountLines(ctx, logPath, log)
	log.Close()
	evs, err := ReadEvents(evPath)
	if err != nil {
		t.Fatal(err)
	}
	var count int64
	var restored []float64
	for _, e := range evs {
		switch e.Kind {
		case KindLogRate:
			count += e.Count
		case KindRestored:
			restored = append(restored, e.T)
		}
	}
	want := Unix(time.Date(2026, 12, 7, 13, 30, 1, 250e6, time.UTC))
	if count != 3 || len(restored) != 1 || restored[0] != want {
		t.Errorf("counted %d lines, restores at %v; want 3 and [%v]", count, restored, want)
	}
}
