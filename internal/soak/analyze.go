package soak

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Limits are the invariants' bounds and the documented windows.
type Limits struct {
	OpenWithin    float64 // a valid knock's port opens within this (s): 1
	ReentryWithin float64 // after a restart, the first knock opens within this (s): 2
	RevokeWithin  float64 // a revoked connection ends within this of its due time (s): 2
	FlushWindow   float64 // a flushed or outranked rule set is back within this (s): 2
	ReloadWindow  float64 // a reload's rules are in force within this (s): 2
	OpenDuration  float64 // gate.open_duration (s), for operator revocations
	WatchdogSec   float64 // the service manager's watchdog interval (s); 0: not judged
	HeapGrowth    float64 // leak phase: heap-in-use growth, fraction: 0.10
	FDGrowth      float64 // leak phase: descriptors: 3
	GoroutineGrow float64 // leak phase: goroutines: 5
	LogRateMax    float64 // log lines per second, mean over any 10 s: 100
	// SaveWindow is how much of the connection record a kill -9 may
	// lose (s): sknockd saves it at most this often, 2 (with slack for a
	// loaded machine: 3).
	SaveWindow float64
	// Protected maps a configuration's name (the reload events' Name) to
	// the ports it protects, as "tcp/5000".
	Protected map[string]map[string]bool
}

// DefaultLimits are the bounds.
func DefaultLimits() Limits {
	return Limits{OpenWithin: 1, ReentryWithin: 2, RevokeWithin: 2, FlushWindow: 2, ReloadWindow: 2,
		OpenDuration: 15, SaveWindow: 3, WatchdogSec: 20, HeapGrowth: 0.10, FDGrowth: 3, GoroutineGrow: 5, LogRateMax: 100}
}

// Row is one line of the report's table.
type Row struct {
	Name     string // the invariant's name, as FAIL lists it
	What     string
	Measured string
	Limit    string
	Held     bool
	Info     bool // a figure reported, not judged
}

// Report is what Analyze found.
type Report struct {
	Rows []Row
}

// Failed returns the names of the invariants that did not hold.
func (r Report) Failed() []string {
	var out []string
	for _, row := range r.Rows {
		if !row.Info && !row.Held {
			out = append(out, row.Name)
		}
	}
	return out
}

// Table renders the report as a Markdown table followed by the verdict
// line, "soak: PASS" or "soak: FAIL (names)".
func (r Report) Table() string {
	var b strings.Builder
	b.WriteString("| invariant | what | measured | limit | |\n|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		res := "held"
		switch {
		case row.Info:
			res = "(figure)"
		case !row.Held:
			res = "**FAILED**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", row.Name, row.What, row.Measured, row.Limit, res)
	}
	if f := r.Failed(); len(f) > 0 {
		fmt.Fprintf(&b, "soak: FAIL (%s)\n", strings.Join(f, ", "))
	} else {
		b.WriteString("soak: PASS\n")
	}
	return b.String()
}

// window is a span of time [from, to].
type window struct{ from, to float64 }

func (w window) has(t float64) bool { return t >= w.from && t <= w.to }

// overlapsAny reports whether [from, to] overlaps one of ws.
func overlapsAny(ws []window, from, to float64) bool {
	for _, w := range ws {
		if from <= w.to && to >= w.from {
			return true
		}
	}
	return false
}

func inAny(ws []window, t float64) bool {
	for _, w := range ws {
		if w.has(t) {
			return true
		}
	}
	return false
}

// timeline is what the script's events say about the daemon and the
// rules over the run.
type timeline struct {
	leak, chaos window
	down        []window  // sknockd not serving: stop or kill to ready
	readies     []float64 // each ready after a stop or kill
	kills       []float64 // each kill -9
	up          []window  // ready to the next stop or kill
	flushes     []window  // rules flushed or outranked, until due back
	configs     []Event   // reloads and starts with a valid config name, in order
	revokes     []Event
}

func buildTimeline(evs []Event, lim Limits) timeline {
	var tl timeline
	end := 0.0
	for _, e := range evs {
		end = math.Max(end, e.T)
	}
	downSince, upSince := -1.0, -1.0
	for _, e := range evs {
		switch e.Kind {
		case KindPhase:
			switch e.Name {
			case "leak":
				tl.leak.from = e.T
			case "chaos":
				tl.leak.to, tl.chaos.from = e.T, e.T
			}
		case KindEnd:
			tl.chaos.to = e.T
			if tl.leak.to == 0 {
				tl.leak.to = e.T
			}
		case KindStop, KindKill:
			if e.Kind == KindKill {
				tl.kills = append(tl.kills, e.T)
			}
			if downSince < 0 {
				downSince = e.T
			}
			if upSince >= 0 {
				tl.up = append(tl.up, window{upSince, e.T})
				upSince = -1
			}
		case KindReady:
			if downSince >= 0 {
				tl.down = append(tl.down, window{downSince, e.T})
				tl.readies = append(tl.readies, e.T)
				downSince = -1
			}
			upSince = e.T
		case KindFlush:
			tl.flushes = append(tl.flushes, window{e.T, e.T + lim.FlushWindow})
		case KindReload, KindStart:
			if _, ok := lim.Protected[e.Name]; ok {
				tl.configs = append(tl.configs, e)
			}
		case KindRevoke:
			tl.revokes = append(tl.revokes, e)
		}
	}
	if downSince >= 0 {
		tl.down = append(tl.down, window{downSince, end})
	}
	if upSince >= 0 {
		tl.up = append(tl.up, window{upSince, end})
	}
	if tl.chaos.to == 0 {
		tl.chaos.to = end
	}
	return tl
}

// protectedThroughout reports whether port was protected by every
// configuration that may have been in force at t: the one applied last
// before t-margin and any applied since.
func (tl timeline) protectedThroughout(lim Limits, port string, t float64) bool {
	seen := false
	for i, c := range tl.configs {
		if c.T > t {
			break
		}
		next := math.Inf(1)
		if i+1 < len(tl.configs) {
			next = tl.configs[i+1].T
		}
		if next < t-lim.ReloadWindow {
			continue // replaced well before t
		}
		seen = true
		if !lim.Protected[c.Name][port] {
			return false
		}
	}
	return seen
}

// dueTime is when a revocation at t must have taken effect: t, or the
// end of a flush window it fell in (the rules' restore), whichever is later.
func (tl timeline) dueTime(t float64) float64 {
	due := t
	for _, f := range tl.flushes {
		if f.has(due) {
			due = f.to
		}
	}
	return due
}

// Analyze judges a run from its events.
func Analyze(evs []Event, lim Limits) Report {
	tl := buildTimeline(evs, lim)
	var r Report
	r.Rows = append(r.Rows, judgeProber(evs, tl, lim)...)
	r.Rows = append(r.Rows, restoreDelays(evs, tl))
	r.Rows = append(r.Rows, judgeKnocks(evs, tl, lim)...)
	r.Rows = append(r.Rows, judgeHeld(evs, tl, lim)...)
	r.Rows = append(r.Rows, judgeLeaks(evs, tl, lim)...)
	r.Rows = append(r.Rows, judgeLogRate(evs, lim))
	r.Rows = append(r.Rows, judgeWatchdog(evs, tl, lim))
	return r
}

// flowMemory is how long conntrack may remember a flow begun while the
// rules were away (UDP: 120 s once answered), so that later packets of it
// pass as established.
const flowMemory = 180

func judgeProber(evs []Event, tl timeline, lim Limits) []Row {
	counted, windowed, windowFlows, attempts := 0, 0, 0, int64(0)
	var examples []string
	// Flows (prober address and port, protocol, port) that got through
	// during a flush window, and when.
	begun := map[string]float64{}
	for _, e := range evs {
		switch e.Kind {
		case KindProbeStats:
			attempts += e.Count
		case KindProbe:
			port := fmt.Sprintf("%s/%d", e.Proto, e.Port)
			flow := e.Src + " " + port
			switch {
			case !tl.protectedThroughout(lim, port, e.T):
			case inAny(tl.flushes, e.T):
				windowed++
				begun[flow] = e.T
			case begun[flow] > 0 && e.T-begun[flow] < flowMemory:
				windowFlows++ // the same flow again: conntrack knows it as established
			default:
				counted++
				if len(examples) < 3 {
					examples = append(examples, fmt.Sprintf("%s from %s at %.1f", port, e.Src, e.T))
				}
			}
		}
	}
	m := fmt.Sprintf("%d of %d attempts", counted, attempts)
	if len(examples) > 0 {
		m += " (" + strings.Join(examples, "; ") + ")"
	}
	return []Row{
		{Name: "prober", What: "connections the ungranted prober made to protected ports, outside the documented windows", Measured: m, Limit: "0", Held: counted == 0},
		{Name: "prober_flush_window", What: "…made while a flush had the rules uncovered (restored within 2 s)", Measured: fmt.Sprint(windowed), Limit: "reported", Info: true},
		{Name: "prober_window_flows", What: "…made later on a flow (same prober address and port) begun in such a window, which conntrack still knew", Measured: fmt.Sprint(windowFlows), Limit: "reported", Info: true},
	}
}

// examplesText renders a few examples after a figure.
func examplesText(ex []string) string {
	if len(ex) == 0 {
		return ""
	}
	return " (" + strings.Join(ex, "; ") + ")"
}

// restoreDelays reports how long after each flush the watcher logged
// "rules restored".
func restoreDelays(evs []Event, tl timeline) Row {
	var restored []float64
	for _, e := range evs {
		if e.Kind == KindRestored {
			restored = append(restored, e.T)
		}
	}
	worst, found := 0.0, 0
	for _, f := range tl.flushes {
		for _, r := range restored {
			if r >= f.from {
				if r-f.from < 30 {
					worst = math.Max(worst, r-f.from)
					found++
				}
				break
			}
		}
	}
	return Row{Name: "flush_restored", What: "flushes and outrankings the watcher logged as restored; the longest time to it",
		Measured: fmt.Sprintf("%d of %d, longest %.2f s", found, len(tl.flushes), worst), Limit: "reported (documented ≤ 2 s)", Info: true}
}

// revokedBy returns the revocations of client c's certificate gen.
func (tl timeline) revokedBy(client string, gen int) []Event {
	var out []Event
	for _, r := range tl.revokes {
		if r.Client == client && r.Gen == gen {
			out = append(out, r)
		}
	}
	return out
}

func judgeKnocks(evs []Event, tl timeline, lim Limits) []Row {
	var total, failed, restartWin, flushWin, revokedWin, revokedOpened, reentryFail, reentryN int
	var examples, openedEx, reentryEx []string
	// The first knock of each client after each restart (each of its
	// ports) is judged by the re-entry bound.
	type first struct {
		ready int
		sent  float64
	}
	firstAfter := map[string]first{} // client -> its first knock after the last ready
	for _, e := range evs {
		if e.Kind != KindKnock {
			continue
		}
		total++
		opened := e.OK && e.Dur <= lim.OpenWithin
		if excluded, revokedCert := revocationWindow(tl, e, lim); excluded {
			revokedWin++
			if revokedCert && e.OK && !inAny(tl.flushes, e.Sent) && !inAny(tl.flushes, e.Sent+e.Dur) {
				revokedOpened++
				if len(openedEx) < 3 {
					openedEx = append(openedEx, fmt.Sprintf("%s gen %d %s/%d at %.1f", e.Client, e.Gen, e.Proto, e.Port, e.Sent+e.Dur))
				}
			}
			continue
		}
		// A knock whose check spans a restart lost its grant with it.
		if overlapsAny(tl.down, e.Sent, e.Sent+lim.OpenWithin) {
			restartWin++
			continue
		}
		if overlapsAny(tl.flushes, e.Sent, e.Sent+lim.OpenWithin) {
			flushWin++
			continue
		}
		ready := -1
		for i, t := range tl.readies {
			if t <= e.Sent {
				ready = i
			}
		}
		if ready >= 0 {
			if f, ok := firstAfter[e.Client]; !ok || f.ready < ready || f.sent == e.Sent {
				firstAfter[e.Client] = first{ready, e.Sent}
				reentryN++
				if !e.OK || e.Dur > lim.ReentryWithin {
					reentryFail++
					if len(reentryEx) < 3 {
						reentryEx = append(reentryEx, fmt.Sprintf("%s %s/%d at %.1f: ok=%v after %.2fs", e.Client, e.Proto, e.Port, e.Sent, e.OK, e.Dur))
					}
				}
				continue
			}
		}
		if !opened {
			failed++
			if len(examples) < 3 {
				examples = append(examples, fmt.Sprintf("%s %s/%d at %.1f: ok=%v after %.2fs", e.Client, e.Proto, e.Port, e.Sent, e.OK, e.Dur))
			}
		}
	}
	m := fmt.Sprintf("%d of %d", failed, total) + examplesText(examples)
	return []Row{
		{Name: "knock_open", What: "knocks by valid, unrevoked clients not open within 1 s, outside the documented windows", Measured: m, Limit: "0", Held: failed == 0},
		{Name: "knock_restart_window", What: "knocks sent while sknockd restarted (grants dropped)", Measured: fmt.Sprint(restartWin), Limit: "reported", Info: true},
		{Name: "knock_flush_window", What: "knocks sent while a flush had the rules away", Measured: fmt.Sprint(flushWin), Limit: "reported", Info: true},
		{Name: "knock_revocation_window", What: "knocks of a revoked certificate, or around an operator revoke", Measured: fmt.Sprint(revokedWin), Limit: "reported", Info: true},
		{Name: "reentry", What: "first knocks after a restart not open within 2 s", Measured: fmt.Sprintf("%d of %d", reentryFail, reentryN) + examplesText(reentryEx), Limit: "0", Held: reentryFail == 0},
		{Name: "revoked_opened", What: "knocks of a CRL-revoked certificate that opened a port (outside flush windows)", Measured: fmt.Sprint(revokedOpened) + examplesText(openedEx), Limit: "0", Held: revokedOpened == 0},
	}
}

// revocationWindow reports whether knock e is left out of the open
// check because of a revocation: its certificate revoked by a CRL before
// its check ended (revokedCert, and then it should not open once the
// revocation is due), or an operator revoke of its grants during it.
func revocationWindow(tl timeline, e Event, lim Limits) (excluded, revokedCert bool) {
	for _, r := range tl.revokedBy(e.Client, e.Gen) {
		if r.Name == "grants" {
			if e.Sent-1 <= r.T && r.T <= e.Sent+lim.OpenWithin+1 {
				return true, false
			}
			continue
		}
		if r.T <= e.Sent+lim.OpenWithin+1 {
			due := tl.dueTime(r.T) + lim.RevokeWithin
			return true, e.Sent > due
		}
	}
	return false, false
}

// grantLive reports whether held connection h had a live grant at t: a
// knock of its certificate for its port and server address opened it
// within the grant's duration before t, and after the last restart
// (which drops grants).
func grantLive(knocks []Event, tl timeline, lim Limits, h Event, t float64) bool {
	lastReady := math.Inf(-1)
	for _, r := range tl.readies {
		if r <= t {
			lastReady = r
		}
	}
	for _, k := range knocks {
		if k.Client == h.Client && k.Gen == h.Gen && k.Proto == h.Proto && k.Port == h.Port && k.Src == h.Src &&
			k.OK && k.Sent <= t && k.Sent >= t-lim.OpenDuration && k.Sent > lastReady {
			return true
		}
	}
	return false
}

// openedInFlush reports whether t falls in a flush window: the rules
// away, the gate bypassed.
func (tl timeline) openedInFlush(t float64) bool {
	for _, f := range tl.flushes {
		if f.has(t) {
			return true
		}
	}
	return false
}

// lostToKill reports whether a connection opened at opened and revoked at
// revoked was opened in the SaveWindow before a kill -9 that came between
// them: the record a kill -9 may lose.
func (tl timeline) lostToKill(opened, revoked float64, lim Limits) bool {
	for _, k := range tl.kills {
		if k >= opened && k <= revoked && k-opened <= lim.SaveWindow {
			return true
		}
	}
	return false
}

func judgeHeld(evs []Event, tl timeline, lim Limits) []Row {
	var n, outlived, revokedN, grantless, grantlessN, killed, flushed, cut, lost, corrupt int64
	var examples, glEx, killEx, flushEx, cutEx []string
	var knocks []Event
	for _, e := range evs {
		if e.Kind == KindKnock {
			knocks = append(knocks, e)
		}
	}
	for _, e := range evs {
		if e.Kind != KindHeld {
			continue
		}
		n++
		corrupt += e.Corrupt
		expectedCut := false
		for _, r := range tl.revokedBy(e.Client, e.Gen) {
			// Alive at the revocation, or, for a CRL's, opened while it
			// came into force (its knock decided before sknockd read
			// the new CRL): the revocation must end it too. An
			// operator's revoke ends grants, not the certificate: a
			// connection opened after it is a new knock's.
			opensBy := r.T
			if r.Name != "grants" {
				opensBy = tl.dueTime(r.T) + lim.RevokeWithin
			}
			if e.Opened > opensBy || r.T > e.T {
				continue
			}
			expectedCut = true
			live := grantLive(knocks, tl, lim, e, r.T)
			if r.Name == "grants" && r.Ended != nil {
				// sknockd said which grants it ended: exactly their
				// connections must end.
				live = slices.Contains(r.Ended, e.Local+" "+e.Proto+"/"+strconv.Itoa(e.Port))
			}
			if !live && r.Name == "grants" {
				continue // an operator revoke ends grants; this one had none
			}
			late := e.LastOK > tl.dueTime(r.T)+lim.RevokeWithin
			ex := fmt.Sprintf("%s %s/%d echoed %.1fs after its %s revocation", e.Client, e.Proto, e.Port, e.LastOK-r.T, r.Name)
			if tl.openedInFlush(e.Opened) {
				// Opened while another tool had the rules away: the
				// gate never saw its first packet, so no record names
				// its certificate (a documented window, like the
				// prober's window flows).
				if late {
					flushed++
					if len(flushEx) < 3 {
						flushEx = append(flushEx, ex)
					}
				}
				continue
			}
			if tl.lostToKill(e.Opened, r.T, lim) {
				// Opened just before a kill -9, after the record's
				// last save: documented as lost.
				if late {
					killed++
					if len(killEx) < 3 {
						killEx = append(killEx, ex)
					}
				}
				continue
			}
			if !live {
				grantlessN++
				if late {
					grantless++
					if len(glEx) < 3 {
						glEx = append(glEx, ex)
					}
				}
				continue
			}
			revokedN++
			if late {
				outlived++
				if len(examples) < 3 {
					examples = append(examples, ex)
				}
			}
		}
		if (e.Cause == "cut" || e.Cause == "stalled") && !expectedCut && e.T < tl.chaos.to {
			cut++
			lost += e.Lost
			if len(cutEx) < 3 {
				cutEx = append(cutEx, fmt.Sprintf("%s %s/%d %s at %.1f (opened %.1f, last echo %.1f)", e.Client, e.Proto, e.Port, e.Cause, e.T, e.Opened, e.LastOK))
			}
		}
	}
	grantlessRow := Row{Name: "revoked_outlived_grantless",
		What:     "…of those whose grant had ended (expired, or dropped by a restart) before the revocation",
		Measured: fmt.Sprintf("%d of %d", grantless, grantlessN) + examplesText(glEx), Limit: "0",
		Held: grantless == 0}
	flushRow := Row{Name: "revoked_flush_window",
		What:     "…opened while a flush had the rules away (the gate never saw them), alive > 2 s after their revocation",
		Measured: fmt.Sprintf("%d", flushed) + examplesText(flushEx), Limit: "reported", Held: true, Info: true}
	killRow := Row{Name: "revoked_kill_window",
		What:     fmt.Sprintf("…opened in the %.0f s before a kill -9 (after the connection record's last save), alive > 2 s after their revocation", lim.SaveWindow),
		Measured: fmt.Sprintf("%d", killed) + examplesText(killEx), Limit: "reported", Held: true, Info: true}
	return []Row{
		{Name: "revoked_outlived", What: "held connections of a revoked client (grant live at the revocation) alive > 2 s after it was due", Measured: fmt.Sprintf("%d of %d", outlived, revokedN) + examplesText(examples), Limit: "0", Held: outlived == 0},
		grantlessRow,
		flushRow,
		killRow,
		{Name: "unrevoked_cut", What: "held connections of unrevoked clients cut or silent for 10 s (restarts included)", Measured: fmt.Sprintf("%d of %d", cut, n) + examplesText(cutEx), Limit: "0", Held: cut == 0},
		{Name: "bytes", What: "bytes lost (on unexpected cuts) or corrupted on held connections", Measured: fmt.Sprintf("%d lost, %d corrupted", lost, corrupt), Limit: "0", Held: lost == 0 && corrupt == 0},
	}
}

// bucketMinima returns, for the samples in [from, to), the minimum of
// value in each bucket of width w, in order (empty buckets left out).
func bucketMinima(samples []Event, from, to, w float64, value func(Event) float64) []float64 {
	mins := map[int]float64{}
	for _, s := range samples {
		if s.T < from || s.T >= to {
			continue
		}
		b := int((s.T - from) / w)
		if v, ok := mins[b]; !ok || value(s) < v {
			mins[b] = value(s)
		}
	}
	keys := make([]int, 0, len(mins))
	for k := range mins {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	out := make([]float64, len(keys))
	for i, k := range keys {
		out[i] = mins[k]
	}
	return out
}

// LeakWindow returns where the leak phase's growth is measured: from
// minute 10 or the phase's first tenth, whichever is earlier (but not
// before 15 s, when the grant table has reached its steady size), to its
// end, in whole buckets of a minute, or of half that span when it is
// shorter than two minutes (a short bucket may hold a GC or two, whose
// marked heap swings with what was in flight at that instant). The
// buckets end at the phase's end; what is left over at the start is
// left out, so that no bucket is partial. loaded, when later than that
// start, is when every kind of flood had run once in the phase: the
// window starts there instead, if that leaves two buckets of 10 s, so
// that a bounded cache a flood fills (knock outcomes, replay memory)
// counts in the first bucket as in the last. Only short runs meet it:
// an hour's first floods come long before minute 10.
func LeakWindow(phase window, loaded float64) (from, to, bucket float64) {
	length := phase.to - phase.from
	warm := math.Max(15, math.Min(600, length/10))
	from, to = phase.from+warm, phase.to
	if loaded > from && phase.to-loaded >= 20 {
		from = loaded
	}
	bucket = math.Min(60, (to-from)/2)
	if bucket <= 0 {
		return from, to, 0
	}
	n := math.Floor((to - from) / bucket)
	return to - n*bucket, to, bucket
}

// growth compares the lowest of the first quarter of the bucket minima
// with the lowest of the last quarter (a bucket each at least): a leak
// raises every minimum, while a flood or a burst of knocks raises a
// bucket or two and passes.
func growth(mins []float64) (first, last float64) {
	q := max(1, len(mins)/4)
	return slices.Min(mins[:q]), slices.Min(mins[len(mins)-q:])
}

// soakGOGC is the GOGC soak.sh runs sknockd with.
const soakGOGC = 25

// firstOfEachFlood returns when the first flood of every kind that ran
// in phase had ended (0 when none did).
func firstOfEachFlood(evs []Event, phase window) float64 {
	ends := map[string]float64{}
	for _, e := range evs {
		if e.Kind == KindFlood && phase.has(e.T) {
			if _, seen := ends[e.Name]; !seen {
				ends[e.Name] = e.T + e.Dur
			}
		}
	}
	last := 0.0
	for _, end := range ends {
		last = math.Max(last, end)
	}
	return last
}

func judgeLeaks(evs []Event, tl timeline, lim Limits) []Row {
	var samples []Event
	for _, e := range evs {
		if e.Kind == KindSample {
			samples = append(samples, e)
		}
	}
	from, to, w := LeakWindow(tl.leak, firstOfEachFlood(evs, tl.leak))
	rows := []Row{}
	type metric struct {
		name, what string
		samples    []Event
		value      func(Event) float64
		limit      float64
		relative   bool
	}
	for _, m := range []metric{
		// The heap is judged at each GC's end, where heap in use is the
		// live heap: next_gc / (1 + GOGC/100) is exactly that for the
		// last GC (soak.sh runs sknockd with GOGC=soakGOGC, so that every
		// bucket holds several GCs). Sampled heap in use is mostly the garbage of the moment
		// (a reload's trust state, a flood's knocks): a 600 s run saw
		// its per-minute minima climb 33.5 → 43.5 MiB while the live
		// heap went 31.1 → 32.2 MiB. Both are in the table.
		{"heap", "sknockd heap live at the last GC (next_gc/1.25 at GOGC=25), growth over the leak phase (per-bucket minima)", samples, func(e Event) float64 { return e.NextGC / (1 + soakGOGC/100) }, lim.HeapGrowth, true},
		{"fds", "sknockd open descriptors, growth over the leak phase", samples, func(e Event) float64 { return e.FDs }, lim.FDGrowth, false},
		{"goroutines", "sknockd goroutines, growth over the leak phase", samples, func(e Event) float64 { return e.Goroutines }, lim.GoroutineGrow, false},
	} {
		mins := []float64{}
		if w > 0 {
			mins = bucketMinima(m.samples, from, to, w, m.value)
		}
		if len(mins) < 2 {
			rows = append(rows, Row{Name: m.name, What: m.what, Measured: fmt.Sprintf("%d buckets of samples (need 2)", len(mins)), Limit: "samples", Held: false})
			continue
		}
		first, last := growth(mins)
		grew, limit := last-first, fmt.Sprintf("≤ %g", m.limit)
		measured := fmt.Sprintf("%.0f → %.0f (%+.0f)", first, last, grew)
		if m.relative {
			grew = grew / math.Max(first, 1)
			limit = fmt.Sprintf("< %.0f %%", m.limit*100)
			measured = fmt.Sprintf("%.1f MiB → %.1f MiB (%+.1f %%)", first/(1<<20), last/(1<<20), grew*100)
		}
		measured += fmt.Sprintf(" over %.0f s, %d buckets of %.0f s, lowest of the first and last %d", to-from, len(mins), w, max(1, len(mins)/4))
		rows = append(rows, Row{Name: m.name, What: m.what, Measured: measured, Limit: limit, Held: grew <= m.limit})
	}
	if inuse := bucketMinima(samples, from, to, w, func(e Event) float64 { return e.Heap }); len(inuse) >= 2 {
		first, last := growth(inuse)
		rows = append(rows, Row{Name: "heap_inuse", What: "sknockd heap in use as sampled (garbage included), the same way",
			Measured: fmt.Sprintf("%.1f MiB → %.1f MiB", first/(1<<20), last/(1<<20)), Limit: "reported", Info: true})
	}
	return rows
}

func judgeLogRate(evs []Event, lim Limits) Row {
	perSecond := map[int64]int64{}
	var total int64
	minS, maxS := int64(math.MaxInt64), int64(0)
	for _, e := range evs {
		if e.Kind != KindLogRate {
			continue
		}
		s := int64(e.T)
		perSecond[s] += e.Count
		total += e.Count
		minS, maxS = min(minS, s), max(maxS, s)
	}
	peak := 0.0
	for s := minS; s <= maxS; s++ {
		var sum int64
		for k := s; k < s+10; k++ {
			sum += perSecond[k]
		}
		peak = math.Max(peak, float64(sum)/10)
	}
	mean := 0.0
	if maxS >= minS && total > 0 {
		mean = float64(total) / float64(maxS-minS+1)
	}
	return Row{Name: "log_rate", What: "sknockd log lines per second (peak of 10 s means)",
		Measured: fmt.Sprintf("peak %.1f/s, mean %.1f/s, %d lines", peak, mean, total),
		Limit:    fmt.Sprintf("≤ %g/s", lim.LogRateMax), Held: peak <= lim.LogRateMax}
}

func judgeWatchdog(evs []Event, tl timeline, lim Limits) Row {
	var pings []float64
	for _, e := range evs {
		if e.Kind == KindWatchdog {
			pings = append(pings, e.T)
		}
	}
	misses := 0
	if lim.WatchdogSec > 0 {
		for _, up := range tl.up {
			last := up.from
			for _, p := range pings {
				if p <= up.from || p > up.to {
					continue
				}
				if p-last > lim.WatchdogSec {
					misses++
				}
				last = p
			}
			if up.to-last > lim.WatchdogSec {
				misses++
			}
		}
	}
	return Row{Name: "watchdog", What: fmt.Sprintf("watchdog restarts (a gap over WatchdogSec=%gs between WATCHDOG=1 while serving)", lim.WatchdogSec),
		Measured: fmt.Sprintf("%d (%d pings)", misses, len(pings)), Limit: "0", Held: misses == 0}
}
