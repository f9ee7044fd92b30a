package gate

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
)

// memory is a replay memory kept outside the engine, as the daemon's
// replay file is: what Config.Remember was given.
type memory struct {
	entries []ReplayEntry
	cov     ReplayCoverage
}

func (m *memory) remember(e ReplayEntry, cov ReplayCoverage) {
	m.entries = append(m.entries, e)
	m.cov = cov
}

// TestEngineRestartWithRememberedKeysRefusesReplay is issue 12, Low 3: a
// knock stamped ahead of the server's clock is above a fresh engine's
// replay floor, so without the previous engine's memory a captured copy
// is granted again after a restart.
func TestEngineRestartWithRememberedKeysRefusesReplay(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	src := netip.MustParseAddr("198.18.0.2")
	trust := p.trust(t)
	start := clock.Now()

	var mem memory
	var first *Engine
	first = NewEngine(Config{Clock: clock.Now, Remember: func(e ReplayEntry, cov ReplayCoverage) {
		// Remembered before the grant takes effect.
		if first.Grants().Len() != 0 {
			t.Error("Remember called after the grant took effect")
		}
		mem.remember(e, cov)
	}}, trust)
	ahead := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(5*time.Second))
	if d := first.Knock(src, ahead); !d.Granted() {
		t.Fatalf("first knock: %v %v", d.Reason, d.Err)
	}
	want := memory{
		entries: []ReplayEntry{{Key: KeyOf(ahead), Expiry: start.Add(5*time.Second + 7*time.Second + time.Second)}},
		cov:     ReplayCoverage{Since: start, Tolerance: 7 * time.Second},
	}
	if diff := cmp.Diff(want, mem, cmp.AllowUnexported(memory{})); diff != "" {
		t.Fatalf("remembered (-want +got):\n%s", diff)
	}

	// Sealed after the first engine began, never sent until the restart.
	held := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(time.Second))
	clock.Advance(2 * time.Second)

	// Without the memory, the restarted engine grants the capture again.
	if d := NewEngine(Config{Clock: clock.Now}, trust).Knock(src, ahead); !d.Granted() {
		t.Fatalf("control: restarted engine without memory: %v, want the grant this test is about", d.Reason)
	}

	second := NewEngine(Config{Clock: clock.Now}, trust)
	n, err := second.LoadReplay(mem.cov, mem.entries)
	if n != 1 || err != nil {
		t.Fatalf("LoadReplay = %d, %v; want 1, nil", n, err)
	}
	if d := second.Knock(src, ahead); d.Reason != ReasonReplay || !errors.Is(d.Err, errReplay) {
		t.Errorf("captured knock after restart: %v %v, want replay (seen before)", d.Reason, d.Err)
	}
	// The memory vouches for knocks sealed since the first engine began,
	// so one sealed before the restart but never granted still opens.
	if d := second.Knock(src, held); !d.Granted() {
		t.Errorf("knock sealed before the restart, first sent after it: %v %v, want grant", d.Reason, d.Err)
	}
	if got := second.ReplayCoverage(); !got.Since.Equal(start) {
		t.Errorf("coverage since %v, want the first engine's start %v", got.Since, start)
	}
}

// TestEngineLoadReplayKeepsFloor checks the cases where the memory cannot
// vouch for the knocks sealed before the start: the floor stays there.
func TestEngineLoadReplayKeepsFloor(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	src := netip.MustParseAddr("198.18.0.2")
	tests := []struct {
		name      string
		give      ReplayCoverage
		entries   int // fresh entries, plus one expired
		maxReplay int
		wantAdded int
		wantErr   error
	}{
		{name: "vouches", give: ReplayCoverage{Tolerance: 7 * time.Second}, entries: 2, wantAdded: 2},
		{name: "wider tolerance", give: ReplayCoverage{Tolerance: 10 * time.Second}, entries: 2, wantAdded: 2},
		{name: "narrower tolerance", give: ReplayCoverage{Tolerance: 5 * time.Second}, entries: 2, wantAdded: 2, wantErr: ErrReplayNarrower},
		{name: "does not fit", give: ReplayCoverage{Tolerance: 7 * time.Second}, entries: 3, maxReplay: 2, wantAdded: 2, wantErr: ErrReplayFull},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Now().Truncate(time.Second)}
			sealed := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(-2*time.Second))
			e := NewEngine(Config{Clock: clock.Now, MaxReplay: tt.maxReplay}, p.trust(t))
			cov := tt.give
			cov.Since = clock.Now().Add(-time.Minute)
			entries := []ReplayEntry{{Key: ReplayKey{0xff}, Expiry: clock.Now()}} // expired: skipped
			for i := range tt.entries {
				entries = append(entries, ReplayEntry{Key: ReplayKey{byte(i)}, Expiry: clock.Now().Add(time.Second)})
			}
			added, err := e.LoadReplay(cov, entries)
			if added != tt.wantAdded || !errors.Is(err, tt.wantErr) {
				t.Fatalf("LoadReplay = %d, %v; want %d, %v", added, err, tt.wantAdded, tt.wantErr)
			}
			d := e.Knock(src, sealed)
			if tt.wantErr == nil && !d.Granted() {
				t.Errorf("knock sealed before the start under a vouching memory: %v %v, want grant", d.Reason, d.Err)
			}
			if tt.wantErr != nil && (d.Reason != ReasonReplay || !errors.Is(d.Err, errBeforeFloor)) {
				t.Errorf("knock sealed before the start: %v %v, want replay (before the floor)", d.Reason, d.Err)
			}
		})
	}
}

// TestEngineReplayCoverageTolerance checks that the coverage names the
// narrowest tolerance the engine had, and moves with a widening reload.
func TestEngineReplayCoverageTolerance(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	trust := p.trust(t)
	e := NewEngine(Config{Clock: clock.Now}, trust)
	narrow, wide := *trust, *trust
	narrow.Tolerance, wide.Tolerance = 3*time.Second, time.Minute
	clock.Advance(10 * time.Second)
	e.SetTrust(&narrow)
	clock.Advance(10 * time.Second)
	e.SetTrust(&wide)
	want := ReplayCoverage{Since: clock.Now(), Tolerance: 3 * time.Second}
	if diff := cmp.Diff(want, e.ReplayCoverage()); diff != "" {
		t.Errorf("coverage (-want +got):\n%s", diff)
	}
}

// TestEngineWithoutReplayMemory: a knock stamped 5 s ahead, granted
// before a restart, is refused after it by an engine told that the
// memory is lost (no replay file): its floor is the start plus the
// tolerance. A knock sealed after that floor is granted.
func TestEngineWithoutReplayMemory(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000"})
	clock := &fakeClock{now: time.Now().Truncate(time.Second)}
	src := netip.MustParseAddr("198.18.0.2")
	trust := p.trust(t)
	ahead := p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now().Add(5*time.Second))
	if d := NewEngine(Config{Clock: clock.Now}, trust).Knock(src, ahead); !d.Granted() {
		t.Fatalf("before the restart: %v %v", d.Reason, d.Err)
	}
	clock.Advance(time.Second) // the restart
	restarted := NewEngine(Config{Clock: clock.Now}, trust)
	floor := restarted.NoReplayMemory()
	if want := clock.Now().Add(7*time.Second + time.Second); !floor.Equal(want) {
		t.Errorf("floor %s, want start + tolerance + 1 s (%s)", floor, want)
	}
	if d := restarted.Knock(src, ahead); d.Granted() || d.Reason != ReasonReplay {
		t.Errorf("the knock granted before the restart, after it: %v %v, want replay", d.Reason, d.Err)
	}
	clock.now = floor
	if d := restarted.Knock(src, p.seal(t, "alice", packet.TCP, 2000, "198.18.0.2", clock.Now())); !d.Granted() {
		t.Errorf("a knock sealed at the floor: %v %v, want granted", d.Reason, d.Err)
	}
}
