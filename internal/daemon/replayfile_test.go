package daemon

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/packet"
)

// replayClock is a settable clock for the replay file's expiries.
type replayClock struct{ now time.Time }

func (c *replayClock) Now() time.Time { return c.now }

// openStarted opens the replay file at path and starts it with cov,
// failing t on any error.
func openStarted(t *testing.T, path string, clock *replayClock, cov gate.ReplayCoverage) (*replayFile, replayMemory) {
	t.Helper()
	rf, mem, err := openReplayFile(path, clock.Now, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := rf.start(cov, mem); err != nil {
		t.Fatal(err)
	}
	return rf, mem
}

func entry(b byte, expiry time.Time) gate.ReplayEntry {
	return gate.ReplayEntry{Key: gate.ReplayKey{b, 0x5a, b}, Expiry: expiry}
}

func TestReplayFileRoundTripDropsExpired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay")
	clock := &replayClock{now: time.Unix(1_700_000_000, 0)}
	cov := gate.ReplayCoverage{Since: clock.now.Add(-time.Hour), Tolerance: 7 * time.Second}
	rf, mem := openStarted(t, path, clock, cov)
	if len(mem.entries) != 0 {
		t.Fatalf("new file holds %d entries", len(mem.entries))
	}
	short, long := entry(1, clock.now.Add(2*time.Second)), entry(2, clock.now.Add(10*time.Second))
	rf.remember(short, cov)
	rf.remember(long, cov)
	// A reload narrowed the tolerance: the header follows.
	narrow := gate.ReplayCoverage{Since: cov.Since, Tolerance: 3 * time.Second}
	later := entry(3, clock.now.Add(8*time.Second))
	rf.remember(later, narrow)
	rf.close()

	clock.now = clock.now.Add(5 * time.Second)
	_, got, err := openReplayFile(path, clock.Now, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	want := replayMemory{cov: narrow, entries: []gate.ReplayEntry{long, later}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(replayMemory{})); diff != "" {
		t.Errorf("read back (-want +got):\n%s", diff)
	}
}

func TestReplayFileCompactionBound(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay")
	clock := &replayClock{now: time.Unix(1_700_000_000, 0)}
	cov := gate.ReplayCoverage{Since: clock.now, Tolerance: 7 * time.Second}
	rf, _ := openStarted(t, path, clock, cov)
	defer rf.close()
	bound := int64(replayHeaderSize + replayCompactAt*replayRecordSize)
	live := entry(0xee, clock.now.Add(10*time.Minute))
	rf.remember(live, cov)
	for i := range 3 * replayCompactAt {
		clock.now = clock.now.Add(time.Millisecond)
		rf.remember(entry(byte(i), clock.now.Add(time.Second)), cov)
		if fi, err := os.Stat(path); err != nil || fi.Size() > bound {
			t.Fatalf("after %d records: size %v, err %v; want at most %d bytes", i+2, fi.Size(), err, bound)
		}
	}
	rf.close()
	_, mem, err := openReplayFile(path, clock.Now, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if len(mem.entries) == 0 || mem.entries[0] != live {
		t.Errorf("after compactions the first entry is %v, want the live one %v", mem.entries[:min(1, len(mem.entries))], live)
	}
	if len(mem.entries) > 1001 {
		t.Errorf("%d entries live, want at most the last second's 1000 and the long one", len(mem.entries))
	}
}

func TestReplayFileDamaged(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cov := gate.ReplayCoverage{Since: now.Add(-time.Minute), Tolerance: 7 * time.Second}
	good := appendReplayRecord(appendReplayHeader(nil, cov), entry(1, now.Add(time.Second)))
	tests := []struct {
		name        string
		give        []byte
		wantEntries int
		wantErr     error
	}{
		{name: "whole", give: good, wantEntries: 1},
		{name: "torn last record ignored", give: append(good[:len(good):len(good)], make([]byte, replayRecordSize-1)...), wantEntries: 1},
		{name: "short header", give: good[:replayHeaderSize-1], wantErr: errReplayCorrupt},
		{name: "wrong magic", give: append([]byte("sknockR0"), good[8:]...), wantErr: errReplayCorrupt},
		{name: "zero tolerance", give: appendReplayHeader(nil, gate.ReplayCoverage{Since: now}), wantErr: errReplayCorrupt},
		{name: "expiry too far ahead", give: appendReplayRecord(good[:len(good):len(good)], entry(3, now.Add(time.Hour))), wantErr: errReplayCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replay")
			if err := os.WriteFile(path, tt.give, 0o600); err != nil {
				t.Fatal(err)
			}
			clock := &replayClock{now: now}
			rf, mem, err := openReplayFile(path, clock.Now, zap.NewNop())
			if rf == nil {
				t.Fatalf("open: %v", err)
			}
			defer rf.close()
			if !errors.Is(err, tt.wantErr) || len(mem.entries) != tt.wantEntries {
				t.Fatalf("got %d entries, %v; want %d, %v", len(mem.entries), err, tt.wantEntries, tt.wantErr)
			}
			// Starting rewrites the file whole.
			if err := rf.start(cov, mem); err != nil {
				t.Fatal(err)
			}
			rf.close()
			if _, _, err := openReplayFile(path, clock.Now, zap.NewNop()); err != nil {
				t.Errorf("after start: %v", err)
			}
		})
	}
}

func TestReplayFileLockedByAnotherDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay")
	clock := &replayClock{now: time.Unix(1_700_000_000, 0)}
	rf, _ := openStarted(t, path, clock, gate.ReplayCoverage{Since: clock.now, Tolerance: time.Second})
	defer rf.close()
	if other, _, err := openReplayFile(path, clock.Now, zap.NewNop()); other != nil || err == nil {
		t.Fatalf("second open of a file in use: %v, %v; want an error", other, err)
	}
}

// TestReplayFileWriteFailure checks that a failed write neither panics nor
// leaves a file that vouches for the lost knock, and is logged once.
func TestReplayFileWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay")
	clock := &replayClock{now: time.Unix(1_700_000_000, 0)}
	cov := gate.ReplayCoverage{Since: clock.now.Add(-time.Minute), Tolerance: 7 * time.Second}
	core, logs := observer.New(zap.InfoLevel)
	rf, mem, err := openReplayFile(path, clock.Now, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	if err := rf.start(cov, mem); err != nil {
		t.Fatal(err)
	}
	defer rf.close()
	// Every write to the file fails from now on.
	readOnly, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	rf.f.Close()
	rf.f = readOnly
	rf.remember(entry(1, clock.now.Add(10*time.Second)), cov)
	rf.remember(entry(2, clock.now.Add(10*time.Second)), cov)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("file after a failed header write: %v, want it removed", err)
	}
	if n := logs.Len(); n != 1 {
		t.Errorf("%d log lines, want 1: %v", n, logs.All())
	}
}

// TestReplayFileLostRecordMovesSince checks the header after a record is
// lost but the header can still be written: the file no longer vouches
// for knocks sealed before the lost one's expiry.
func TestReplayFileLostRecordMovesSince(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replay")
	clock := &replayClock{now: time.Unix(1_700_000_000, 0)}
	cov := gate.ReplayCoverage{Since: clock.now.Add(-time.Minute), Tolerance: 7 * time.Second}
	rf, _ := openStarted(t, path, clock, cov)
	defer rf.close()
	rf.lostUntil = clock.now.Add(12 * time.Second) // as remember sets it
	rf.remember(entry(1, clock.now.Add(10*time.Second)), cov)
	rf.close()
	_, mem, err := openReplayFile(path, clock.Now, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.now.Add(13 * time.Second); !mem.cov.Since.Equal(want) {
		t.Errorf("since = %v, want %v", mem.cov.Since, want)
	}
}

// TestDaemonCreatesStateDirectory: the replay file's directory, missing
// (a host installed from source has no /var/lib/sknock), is created with
// mode 0700, and the memory is kept.
func TestDaemonCreatesStateDirectory(t *testing.T) {
	_, cfg := daemonPKI(t)
	cfg.ReplayFile = filepath.Join(t.TempDir(), "var", "lib", "sknock", "replay")
	d := runDaemon(t, &cfg, newFakeOS())
	d.stop()
	fi, err := os.Stat(filepath.Dir(cfg.ReplayFile))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("state directory: %v, mode %v; want 0700", err, fi.Mode())
	}
	if _, err := os.Stat(cfg.ReplayFile); err != nil {
		t.Errorf("replay file: %v", err)
	}
	if lines := logLines(d.logs, "replay memory of the previous run lost"); len(lines) != 0 {
		t.Errorf("a new replay file logged as a lost memory: %v", lines)
	}
}

// TestDaemonRestartWithoutReplayFile: a knock stamped 5 s ahead of the
// clock, granted before a restart, is not granted after it when the
// restarted daemon cannot keep its replay file: its replay floor is its
// start plus the tolerance, which it logs with the cost.
func TestDaemonRestartWithoutReplayFile(t *testing.T) {
	dir, cfg := daemonPKI(t)
	ahead := testpki.Load(t, dir, nil).Seal(t, "alice", packet.TCP, 2000, netip.MustParseAddr("198.18.0.2"), time.Now().Add(5*time.Second))
	for run, want := range []string{"granted", "replay"} {
		if run == 1 {
			cfg.ReplayFile = filepath.Join(cfg.CRLFile, "replay") // under a file: cannot be kept
		}
		f := newFakeOS()
		d := runDaemon(t, &cfg, f)
		injectKnock(t, f, "198.18.0.2", ahead)
		if got := d.knocks.next(t, "knock").dec.Reason.String(); got != want {
			t.Errorf("run %d: the knock stamped ahead: %s, want %s", run+1, got, want)
		}
		d.stop()
		lines := logLines(d.logs, "replay memory of the previous run lost")
		if run == 0 && len(lines) != 0 {
			t.Errorf("run 1, with a replay file: %v", lines)
		}
		if run == 1 && (len(lines) != 1 || !strings.Contains(lines[0], `"floor":`) || !strings.Contains(lines[0], "every knock is refused for ")) {
			t.Errorf("run 2: log %v, want one line with the floor and its cost", lines)
		}
	}
}
