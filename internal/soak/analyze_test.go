package soak

import (
	"slices"
	"strings"
	"testing"
)

// baseRun is a quiet run that passes: a leak phase of 100 s with steady
// samples and watchdog pings, a chaos phase of 100 s with one restart,
// knocks that open, held connections planned to end, a CRL revocation
// whose live connection was cut in time.
func baseRun() []Event {
	evs := []Event{
		{T: 0, Kind: KindStart, Name: "a"},
		{T: 0.2, Kind: KindReady},
		{T: 1, Kind: KindPhase, Name: "leak"},
		{T: 101, Kind: KindPhase, Name: "chaos"},
		{T: 150, Kind: KindStop},
		{T: 150.1, Kind: KindStart, Name: "a"},
		{T: 150.4, Kind: KindReady},
		{T: 201, Kind: KindEnd},
		// c1 knocks and opens; its held connection ends as planned.
		{T: 10.3, Kind: KindKnock, Client: "c1", Gen: 1, Proto: "tcp", Port: 5000, Src: "198.18.0.1", Sent: 10, OK: true, Dur: 0.01},
		{T: 40, Kind: KindHeld, Client: "c1", Gen: 1, Proto: "tcp", Port: 5000, Src: "198.18.0.1", Opened: 10.1, LastOK: 39.9, Cause: "planned", Bytes: 1000},
		// c2 is revoked by CRL at 60 with a live grant (knock at 55); its
		// connection is cut 0.5 s later.
		{T: 55.2, Kind: KindKnock, Client: "c2", Gen: 1, Proto: "tcp", Port: 5001, Src: "198.18.0.1", Sent: 55, OK: true, Dur: 0.01},
		{T: 60, Kind: KindRevoke, Client: "c2", Gen: 1, Name: "crl-file"},
		{T: 60.5, Kind: KindHeld, Client: "c2", Gen: 1, Proto: "tcp", Port: 5001, Src: "198.18.0.1", Opened: 55.1, LastOK: 60.2, Cause: "cut", Lost: 100},
		// c3's first knock after the restart opens in 1.5 s (re-entry).
		{T: 152.3, Kind: KindKnock, Client: "c3", Gen: 1, Proto: "tcp", Port: 5002, Src: "198.18.0.1", Sent: 151, OK: true, Dur: 1.5},
	}
	for t := 1.0; t < 101; t += 2 {
		evs = append(evs, Event{T: t, Kind: KindSample, Heap: 10 << 20, NextGC: 20 << 20, GCs: t, FDs: 16, Goroutines: 23})
	}
	for t := 5.0; t < 201; t += 10 {
		evs = append(evs, Event{T: t, Kind: KindWatchdog}, Event{T: t, Kind: KindLogRate, Count: 20})
	}
	return evs
}

func limits() Limits {
	l := DefaultLimits()
	l.Protected = map[string]map[string]bool{
		"a": {"tcp/5000": true, "tcp/5050": true},
		"b": {"tcp/5000": true},
	}
	return l
}

func run(evs []Event) []string {
	slices.SortStableFunc(evs, func(a, b Event) int {
		switch {
		case a.T < b.T:
			return -1
		case a.T > b.T:
			return 1
		}
		return 0
	})
	return Analyze(evs, limits()).Failed()
}

func TestAnalyzePassesAQuietRun(t *testing.T) {
	r := Analyze(baseRun(), limits())
	if f := r.Failed(); len(f) != 0 {
		t.Fatalf("failed %v:\n%s", f, r.Table())
	}
	if !strings.HasSuffix(r.Table(), "soak: PASS\n") {
		t.Errorf("table does not end in soak: PASS:\n%s", r.Table())
	}
}

// TestAnalyzeEachInvariantCanFail breaks each invariant on purpose and
// wants exactly it named.
func TestAnalyzeEachInvariantCanFail(t *testing.T) {
	tests := []struct {
		name string
		give []Event // added to baseRun
		want []string
	}{
		{"prober got through", []Event{{T: 30, Kind: KindProbe, Proto: "tcp", Port: 5000, Src: "198.18.0.200"}}, []string{"prober"}},
		{"knock late", []Event{{T: 80, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "tcp", Port: 5003, Src: "198.18.0.1", Sent: 77, OK: true, Dur: 1.4}}, []string{"knock_open"}},
		{"knock never opened", []Event{{T: 80, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "udp", Port: 6003, Src: "fd00:5e::1", Sent: 77, Dur: 3}}, []string{"knock_open"}},
		{"re-entry slow", []Event{{T: 155, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "tcp", Port: 5003, Src: "198.18.0.1", Sent: 152, OK: true, Dur: 2.5}}, []string{"reentry"}},
		{"revoked certificate opened", []Event{{T: 70.1, Kind: KindKnock, Client: "c2", Gen: 1, Proto: "tcp", Port: 5001, Src: "198.18.0.1", Sent: 70, OK: true, Dur: 0.05}}, []string{"revoked_opened"}},
		{"revoked connection outlived", []Event{
			{T: 58, Kind: KindKnock, Client: "c5", Gen: 2, Proto: "tcp", Port: 5004, Src: "198.18.0.1", Sent: 57.9, OK: true, Dur: 0.01},
			{T: 62, Kind: KindRevoke, Client: "c5", Gen: 2, Name: "crl-url"},
			{T: 70, Kind: KindHeld, Client: "c5", Gen: 2, Proto: "tcp", Port: 5004, Src: "198.18.0.1", Opened: 58, LastOK: 64.5, Cause: "cut"},
		}, []string{"revoked_outlived"}},
		{"operator revoke ended its grant, not its connection", []Event{
			{T: 64, Kind: KindRevoke, Client: "c7", Gen: 1, Name: "grants", Ended: []string{"198.18.0.17 tcp/5006"}},
			{T: 90, Kind: KindHeld, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Local: "198.18.0.17", Opened: 30, LastOK: 89, Cause: "planned"},
		}, []string{"revoked_outlived"}},
		{"unrevoked connection cut", []Event{{T: 90, Kind: KindHeld, Client: "c6", Gen: 1, Proto: "tcp", Port: 5005, Src: "198.18.0.1", Opened: 20, LastOK: 89.8, Cause: "cut"}}, []string{"unrevoked_cut"}},
		{"bytes lost on a cut", []Event{{T: 90, Kind: KindHeld, Client: "c6", Gen: 1, Proto: "tcp", Port: 5005, Src: "198.18.0.1", Opened: 20, LastOK: 89.8, Cause: "cut", Lost: 200}}, []string{"unrevoked_cut", "bytes"}},
		{"bytes corrupted", []Event{{T: 90, Kind: KindHeld, Client: "c6", Gen: 1, Proto: "tcp", Port: 5005, Src: "198.18.0.1", Opened: 20, LastOK: 89.8, Cause: "corrupt", Corrupt: 1}}, []string{"bytes"}},
		{"heap grows", growing(func(e *Event, i int) {
			e.Heap = float64(12<<20 + i*(200<<10))
			e.NextGC = float64(20<<20 + i*(400<<10))
		}), []string{"heap"}},
		{"descriptors leak", growing(func(e *Event, i int) { e.FDs = float64(16 + i/5) }), []string{"fds"}},
		{"goroutines leak", growing(func(e *Event, i int) { e.Goroutines = float64(23 + i/3) }), []string{"goroutines"}},
		{"log flood", []Event{{T: 120, Kind: KindLogRate, Count: 5000}}, []string{"log_rate"}},
		{"watchdog missed", []Event{{T: 150.5, Kind: KindStop}, {T: 150.6, Kind: KindReady}}, []string{"watchdog"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs := baseRun()
			if strings.HasPrefix(tt.name, "heap") || strings.HasPrefix(tt.name, "descriptors") || strings.HasPrefix(tt.name, "goroutines") {
				evs = slices.DeleteFunc(evs, func(e Event) bool { return e.Kind == KindSample })
			}
			if tt.name == "watchdog missed" {
				// No pings during the chaos phase's second half.
				evs = slices.DeleteFunc(evs, func(e Event) bool { return e.Kind == KindWatchdog && e.T > 150 })
				tt.give = nil
			}
			got := run(append(evs, tt.give...))
			if !slices.Equal(got, tt.want) {
				t.Errorf("failed %v, want %v", got, tt.want)
			}
		})
	}
}

// growing returns leak-phase samples, one every 2 s, with set applied.
func growing(set func(e *Event, i int)) []Event {
	var out []Event
	for i := 0; i < 50; i++ {
		e := Event{T: 1 + float64(2*i), Kind: KindSample, Heap: 10 << 20, NextGC: 20 << 20, GCs: float64(i), FDs: 16, Goroutines: 23}
		set(&e, i)
		out = append(out, e)
	}
	return out
}

// TestAnalyzeHeapSawtooth: heap in use that climbs between GCs and falls
// back at each one is no leak, though a bucket may hold no GC.
func TestAnalyzeHeapSawtooth(t *testing.T) {
	evs := slices.DeleteFunc(baseRun(), func(e Event) bool { return e.Kind == KindSample })
	gcs := 0.0
	for i := 0; i < 50; i++ {
		e := Event{T: 1 + float64(2*i), Kind: KindSample, FDs: 16, Goroutines: 23}
		phase := i % 12 // a GC every 24 s, just before phase 0
		if phase == 0 {
			gcs++
		}
		e.GCs, e.Heap = gcs, float64(10<<20+phase*(1<<20))
		evs = append(evs, e)
	}
	if got := run(evs); len(got) != 0 {
		t.Errorf("failed %v, want nothing", got)
	}
}

// TestAnalyzeHeapBurstAtTheEnd: a flood that raises the last minute's
// heap, after a flat phase, is no leak.
func TestAnalyzeHeapBurstAtTheEnd(t *testing.T) {
	lim := limits()
	var evs []Event
	evs = append(evs, Event{T: 0, Kind: KindPhase, Name: "leak"}, Event{T: 1000, Kind: KindPhase, Name: "chaos"}, Event{T: 1100, Kind: KindEnd})
	for i := 0; i < 500; i++ {
		heap := float64(10 << 20)
		if i >= 470 {
			heap = 11.5 * (1 << 20) // the last minute: a flood in flight
		}
		evs = append(evs, Event{T: float64(2 * i), Kind: KindSample, Heap: heap, GCs: float64(i), FDs: 16, Goroutines: 23})
	}
	for _, row := range Analyze(evs, lim).Rows {
		if row.Name == "heap" && !row.Held {
			t.Errorf("heap judged a leak: %s", row.Measured)
		}
	}
}

// TestAnalyzeDocumentedWindows: what happens inside a documented window is
// counted apart and fails nothing.
func TestAnalyzeDocumentedWindows(t *testing.T) {
	tests := []struct {
		name string
		give []Event
	}{
		{"prober during a flush", []Event{{T: 30, Kind: KindFlush, Name: "flush-prerouting-v4"}, {T: 31.5, Kind: KindProbe, Proto: "tcp", Port: 5000}}},
		{"prober on a flow begun during a flush", []Event{{T: 30, Kind: KindFlush}, {T: 31.5, Kind: KindProbe, Proto: "udp", Port: 6000, Src: "198.18.0.200:41000"}, {T: 70, Kind: KindProbe, Proto: "udp", Port: 6000, Src: "198.18.0.200:41000"}}},
		{"prober on a port the config in force leaves open", []Event{{T: 40, Kind: KindReload, Name: "b"}, {T: 43, Kind: KindProbe, Proto: "tcp", Port: 5050}}},
		{"prober on a port just unprotected by a reload", []Event{{T: 40, Kind: KindReload, Name: "b"}, {T: 40.5, Kind: KindProbe, Proto: "tcp", Port: 5050}}},
		{"knock during a restart", []Event{{T: 153, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "tcp", Port: 5003, Src: "198.18.0.1", Sent: 150.05, Dur: 3}}},
		{"knock granted just before a kill, checked across it", []Event{{T: 153, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "udp", Port: 6003, Src: "198.18.0.1", Sent: 149.98, Dur: 3}}},
		{"knock during a flush", []Event{{T: 30, Kind: KindFlush}, {T: 34, Kind: KindKnock, Client: "c4", Gen: 1, Proto: "tcp", Port: 5003, Sent: 30.5, Dur: 3}}},
		{"revoked certificate refused", []Event{{T: 73, Kind: KindKnock, Client: "c2", Gen: 1, Proto: "tcp", Port: 5001, Sent: 70, Dur: 3}}},
		{"revoked certificate opened during a flush", []Event{{T: 69.9, Kind: KindFlush}, {T: 70.1, Kind: KindKnock, Client: "c2", Gen: 1, Proto: "tcp", Port: 5001, Sent: 70, OK: true, Dur: 0.05}}},
		{"operator revoke cuts its client", []Event{
			{T: 84, Kind: KindKnock, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Sent: 84, OK: true, Dur: 0.01},
			{T: 85, Kind: KindRevoke, Client: "c7", Gen: 1, Name: "grants"},
			{T: 85.3, Kind: KindHeld, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Opened: 84.1, LastOK: 85.1, Cause: "cut"},
		}},
		{"operator revoke after a restart finds no grant", []Event{
			{T: 140, Kind: KindKnock, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Sent: 140, OK: true, Dur: 0.01},
			{T: 150.5, Kind: KindRevoke, Client: "c7", Gen: 1, Name: "grants"},
			{T: 170, Kind: KindHeld, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Opened: 140.1, LastOK: 169, Cause: "planned"},
		}},
		{"a held connection ended by the harness stopping", []Event{{T: 201.2, Kind: KindHeld, Client: "c6", Gen: 1, Proto: "tcp", Port: 5005, Src: "198.18.0.1", Opened: 120, LastOK: 201, Cause: "cut", Lost: 100}}},
		{"operator revoke ended other grants", []Event{
			{T: 64, Kind: KindRevoke, Client: "c7", Gen: 1, Name: "grants", Ended: []string{"fd00:5e::17 tcp/5006"}},
			{T: 90, Kind: KindHeld, Client: "c7", Gen: 1, Proto: "tcp", Port: 5006, Src: "198.18.0.1", Local: "198.18.0.17", Opened: 62, LastOK: 89, Cause: "planned"},
		}},
		{"revocation due after the rules' restore", []Event{
			{T: 89, Kind: KindKnock, Client: "c8", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Sent: 89, OK: true, Dur: 0.01},
			{T: 89.5, Kind: KindFlush},
			{T: 90, Kind: KindRevoke, Client: "c8", Gen: 1, Name: "crl-url"},
			{T: 93.7, Kind: KindHeld, Client: "c8", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Opened: 89.1, LastOK: 93.4, Cause: "cut"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(append(baseRun(), tt.give...)); len(got) != 0 {
				t.Errorf("failed %v, want nothing", got)
			}
		})
	}
}

// TestAnalyzeGrantlessRevocation: a revocation of a connection whose
// grant had ended is judged in its own row, unless the connection was
// opened in the save window before a kill -9 (then it is reported).
func TestAnalyzeGrantlessRevocation(t *testing.T) {
	evs := append(baseRun(),
		Event{T: 20, Kind: KindKnock, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Sent: 20, OK: true, Dur: 0.01},
		Event{T: 60, Kind: KindRevoke, Client: "c9", Gen: 1, Name: "crl-file"},
		Event{T: 80, Kind: KindHeld, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Opened: 20.1, LastOK: 79, Cause: "planned"},
	)
	if got := run(evs); !slices.Equal(got, []string{"revoked_outlived_grantless"}) {
		t.Errorf("failed %v, want [revoked_outlived_grantless]", got)
	}
	killed := append(slices.Clone(evs), Event{T: 21, Kind: KindKill}, Event{T: 21.5, Kind: KindReady})
	rows := Analyze(killed, limits())
	if got := rows.Failed(); len(got) != 0 {
		t.Errorf("opened 0.9 s before a kill -9: failed %v, want nothing", got)
	}
	for _, r := range rows.Rows {
		if r.Name == "revoked_kill_window" && !strings.HasPrefix(r.Measured, "1") {
			t.Errorf("revoked_kill_window: %q, want 1", r.Measured)
		}
	}
}

// TestAnalyzeConnOpenedAsRevoked: a knock sent just after its client's
// CRL revocation, decided before sknockd read the new CRL, opens a
// connection that the revocation then cuts: not an unrevoked cut (the
// hour's run, l2x7 at 16:25:35).
func TestAnalyzeConnOpenedAsRevoked(t *testing.T) {
	evs := append(baseRun(),
		Event{T: 60, Kind: KindRevoke, Client: "c9", Gen: 1, Name: "crl-file"},
		Event{T: 60.2, Kind: KindKnock, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Sent: 60.16, OK: true, Dur: 0.01},
		Event{T: 60.4, Kind: KindHeld, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Opened: 60.17, LastOK: 60.17, Cause: "cut", Lost: 187},
	)
	if got := run(evs); len(got) != 0 {
		t.Errorf("failed %v, want nothing", got)
	}
	// Opened well after the revocation was due, and cut: unexpected.
	late := append(baseRun(),
		Event{T: 60, Kind: KindRevoke, Client: "c9", Gen: 1, Name: "crl-file"},
		Event{T: 70.4, Kind: KindHeld, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Opened: 70.1, LastOK: 70.1, Cause: "cut", Lost: 10},
	)
	if got := run(late); !slices.Equal(got, []string{"unrevoked_cut", "bytes"}) {
		t.Errorf("a cut 10 s after the revocation: failed %v, want [unrevoked_cut bytes]", got)
	}
	// An operator's revoke ends grants: a connection opened 1.6 s after
	// it, on a new knock, lives on (the 180 s soak, c1x6).
	regranted := append(baseRun(),
		Event{T: 60, Kind: KindRevoke, Client: "c9", Gen: 1, Name: "grants", Ended: []string{"198.18.0.9 tcp/5007"}},
		Event{T: 61.5, Kind: KindKnock, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Sent: 61.5, OK: true, Dur: 0.01},
		Event{T: 110, Kind: KindHeld, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "198.18.0.1", Local: "198.18.0.9", Opened: 61.6, LastOK: 109.9, Cause: "planned"},
	)
	if got := run(regranted); len(got) != 0 {
		t.Errorf("a connection opened after an operator's revoke: failed %v, want nothing", got)
	}
}

// TestAnalyzeConnOpenedInFlush: a connection opened while a flush had the
// rules away is reported, not judged, when its revocation does not end it
// (the hour's run, c5x6 at 16:47:26, during an outrank-v6).
func TestAnalyzeConnOpenedInFlush(t *testing.T) {
	evs := append(baseRun(),
		Event{T: 20, Kind: KindFlush, Name: "outrank-v6"},
		Event{T: 20.4, Kind: KindKnock, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "fd00:5e::1", Sent: 20.4, OK: true, Dur: 0.01},
		Event{T: 60, Kind: KindRevoke, Client: "c9", Gen: 1, Name: "grants", Ended: []string{"fd00:5e::19 tcp/5007"}},
		Event{T: 80, Kind: KindHeld, Client: "c9", Gen: 1, Proto: "tcp", Port: 5007, Src: "fd00:5e::1", Local: "fd00:5e::19", Opened: 20.41, LastOK: 79, Cause: "planned"},
	)
	rep := Analyze(evs, limits())
	if got := rep.Failed(); len(got) != 0 {
		t.Errorf("failed %v, want nothing", got)
	}
	for _, r := range rep.Rows {
		if r.Name == "revoked_flush_window" && !strings.HasPrefix(r.Measured, "1") {
			t.Errorf("revoked_flush_window: %q, want 1", r.Measured)
		}
	}
}

func TestLeakWindow(t *testing.T) {
	tests := []struct {
		name                    string
		give                    window
		loaded                  float64
		wantFrom, wantTo, wantB float64
	}{
		{"long phase: from minute 10, minute buckets", window{0, 7200}, 0, 600, 7200, 60},
		{"long phase: floods long before minute 10 change nothing", window{0, 7200}, 200, 600, 7200, 60},
		{"36 min phase: from its first tenth, whole minutes", window{0, 2160}, 0, 240, 2160, 60},
		{"72 s phase: from 15 s, halves", window{100, 172}, 0, 115, 172, 28.5},
		{"72 s phase: from the end of the first floods", window{100, 172}, 140, 140, 172, 16},
		{"72 s phase: floods too late to leave two buckets of 10 s", window{100, 172}, 160, 115, 172, 28.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from, to, b := LeakWindow(tt.give, tt.loaded)
			if from != tt.wantFrom || to != tt.wantTo || b != tt.wantB {
				t.Errorf("LeakWindow = %g, %g, %g; want %g, %g, %g", from, to, b, tt.wantFrom, tt.wantTo, tt.wantB)
			}
		})
	}
}

// TestFirstOfEachFlood: the end of the last kind's first flood in the
// phase; floods outside it and second floods of a kind do not count.
func TestFirstOfEachFlood(t *testing.T) {
	phase := window{100, 172}
	evs := []Event{
		{Kind: KindFlood, Name: "syn", T: 90, Dur: 5}, // before the phase
		{Kind: KindFlood, Name: "syn", T: 110, Dur: 4},
		{Kind: KindFlood, Name: "garbage", T: 120, Dur: 6},
		{Kind: KindFlood, Name: "syn", T: 150, Dur: 4}, // a second one
		{Kind: KindReload, T: 130},
	}
	if got := firstOfEachFlood(evs, phase); got != 126 {
		t.Errorf("firstOfEachFlood = %g, want 126 (the garbage flood's end)", got)
	}
	if got := firstOfEachFlood(nil, phase); got != 0 {
		t.Errorf("no floods: %g, want 0", got)
	}
}
