package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"sknock/gate"
)

// The replay file keeps the engine's replay memory across restarts
// (knock.replay_file): without it a knock stamped up to the tolerance
// ahead of the server's clock would be above a restarted engine's replay
// floor and granted again. It is a header and then one fixed-size record
// a grant, appended before the grant takes effect, all integers
// big-endian:
//
//	header  magic "sknockR2" | since (Unix s, int64) | tolerance (ns, int64)
//	record  replay key (32 bytes) | expiry (Unix ns, int64)
//
// The header is the engine's gate.ReplayCoverage: every knock sealed at or
// after since that was granted is among the records. Writes are not
// synced: a write is in the page cache when write(2) returns, so it
// survives kill -9, and a reboot takes longer than the tolerance, after
// which the timestamp check refuses every knock the file held.
const (
	// replayMagic names the format and what its keys are: R2's are
	// gate.KeyOf's bound keys (issue 20); an R1 file's keys (hashes of
	// whole datagrams) would match no knock, so it is refused as not a
	// replay file, and the engine's replay floor stays where it is
	// without one.
	replayMagic      = "sknockR2"
	replayHeaderSize = len(replayMagic) + 8 + 8
	replayRecordSize = len(gate.ReplayKey{}) + 8
	// replayOffExpiry is the expiry's offset in a record.
	replayOffExpiry = len(gate.ReplayKey{})
)

// Bounds of the replay file. It is rewritten with its unexpired records
// only (compacted) when it holds replayCompactAt records, or twice what
// the last compaction kept if more: every record is a knock the replay
// cache holds until it expires, so the file holds at most about twice
// the cache's bound. A file with more records than replayMaxRecords is
// refused as corrupt when read.
const (
	replayCompactAt  = 4096
	replayMaxRecords = 4 * gate.DefaultReplayEntries
	// replayMaxAhead bounds a record's expiry: a knock sealed up to the
	// widest tolerance (10 minutes) ahead, plus that tolerance and a
	// second. A later one is not something sknockd wrote.
	replayMaxAhead = 2*10*time.Minute + time.Second
	// replayLogEvery spaces the lines about failed writes.
	replayLogEvery = time.Minute
)

// errReplayCorrupt is why a replay file was not loaded: its header or a
// record is not what sknockd writes. The daemon then starts without the
// memory (its replay floor is its start, as without a file) and rewrites
// the file.
var errReplayCorrupt = errors.New("not a sknock replay file, or damaged")

// replayMemory is a replay file's contents.
type replayMemory struct {
	cov     gate.ReplayCoverage
	entries []gate.ReplayEntry
}

// parseReplayFile decodes a replay file's contents, keeping the entries
// not yet expired at now. A partial record at the end (a write cut short
// by a crash of the machine) is ignored: its grant never took effect,
// since the record is written first. Anything else out of place makes the
// whole file errReplayCorrupt.
func parseReplayFile(data []byte, now time.Time) (replayMemory, error) {
	if len(data) < replayHeaderSize || string(data[:len(replayMagic)]) != replayMagic {
		return replayMemory{}, fmt.Errorf("header: %w", errReplayCorrupt)
	}
	var m replayMemory
	m.cov.Since = time.Unix(int64(binary.BigEndian.Uint64(data[8:])), 0)
	m.cov.Tolerance = time.Duration(binary.BigEndian.Uint64(data[16:]))
	if m.cov.Tolerance <= 0 {
		return replayMemory{}, fmt.Errorf("header: tolerance %d: %w", m.cov.Tolerance, errReplayCorrupt)
	}
	records := data[replayHeaderSize:]
	if n := len(records) / replayRecordSize; n > replayMaxRecords {
		return replayMemory{}, fmt.Errorf("%d records, at most %d: %w", n, replayMaxRecords, errReplayCorrupt)
	}
	limit := now.Add(replayMaxAhead).UnixNano()
	for i := 0; len(records) >= replayRecordSize; i++ {
		rec := records[:replayRecordSize]
		records = records[replayRecordSize:]
		exp := int64(binary.BigEndian.Uint64(rec[replayOffExpiry:]))
		if exp > limit {
			return replayMemory{}, fmt.Errorf("record %d expires %s: %w", i, time.Unix(0, exp).UTC().Format(time.RFC3339), errReplayCorrupt)
		}
		if exp <= now.UnixNano() {
			continue
		}
		m.entries = append(m.entries, gate.ReplayEntry{Key: gate.ReplayKey(rec[:replayOffExpiry]), Expiry: time.Unix(0, exp)})
	}
	return m, nil
}

// appendReplayHeader appends the header for cov to b.
func appendReplayHeader(b []byte, cov gate.ReplayCoverage) []byte {
	b = append(b, replayMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(cov.Since.Unix()))
	return binary.BigEndian.AppendUint64(b, uint64(cov.Tolerance))
}

// appendReplayRecord appends the record of e to b.
func appendReplayRecord(b []byte, e gate.ReplayEntry) []byte {
	b = append(b, e.Key[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(e.Expiry.UnixNano()))
}

// replayFile is the open replay file. Its remember method is the engine's
// Config.Remember.
//
// A failed write never refuses a grant: the engine's cache still protects
// it while this process lives. The file must then not vouch for the lost
// knock after a restart, so its header's since is moved past the knock's
// expiry (a restart within that time refuses knocks sealed before it, as
// without a file). If even the header cannot be written, the file is
// removed and no longer written until the next start. Failures are logged
// at most once a minute, with their count.
type replayFile struct {
	path  string
	clock func() time.Time
	log   *zap.Logger

	mu        sync.Mutex
	f         *os.File // nil: closed, or given up after a failure
	size      int64    // bytes written and known good
	records   int
	compactAt int
	onDisk    gate.ReplayCoverage // the header as written
	lostUntil time.Time           // since must stay after this: a record was lost
	failures  int                 // since the last line about them
	loggedAt  time.Time
	buf       []byte
}

// openReplayFile opens (creating it, and its directory with mode 0700,
// if need be) the replay file at path and locks it, so that two sknockd in different network namespaces
// cannot share one, and returns it with the memory it held. With a nil
// file, the error says why the file cannot be kept at all; with a file
// and an error (errReplayCorrupt), the memory could not be read and is
// empty, and start will overwrite it. A new, empty file holds no memory.
func openReplayFile(path string, clock func() time.Time, log *zap.Logger) (*replayFile, replayMemory, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, replayMemory{}, fmt.Errorf("state directory of the replay file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, replayMemory{}, fmt.Errorf("open replay file: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, replayMemory{}, fmt.Errorf("replay file %s: %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(replayHeaderSize+(replayMaxRecords+1)*replayRecordSize)))
	if err != nil {
		f.Close()
		return nil, replayMemory{}, fmt.Errorf("read replay file %s: %w", path, err)
	}
	rf := &replayFile{path: path, clock: clock, log: log, f: f}
	if len(data) == 0 {
		return rf, replayMemory{}, nil
	}
	mem, err := parseReplayFile(data, clock())
	if err != nil {
		return rf, replayMemory{}, fmt.Errorf("replay file %s: %w", path, err)
	}
	return rf, mem, nil
}

// start rewrites the file with cov and the entries of mem still live,
// ready for remember. cov is the engine's coverage once mem is loaded.
// When that fails the file is removed, so that it vouches for nothing
// after this run, and remember does nothing.
func (rf *replayFile) start(cov gate.ReplayCoverage, mem replayMemory) error {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	var b bytes.Buffer
	b.Write(appendReplayHeader(nil, cov))
	for _, e := range mem.entries {
		b.Write(appendReplayRecord(nil, e))
	}
	if err := rf.replaceLocked(b.Bytes(), cov, len(mem.entries)); err != nil {
		rf.f.Close()
		rf.f = nil
		if rmErr := os.Remove(rf.path); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
		return err
	}
	return nil
}

// remember writes the record of e; cov is the engine's coverage now.
func (rf *replayFile) remember(e gate.ReplayEntry, cov gate.ReplayCoverage) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f == nil {
		return
	}
	if rf.records >= rf.compactAt {
		if err := rf.compactLocked(cov); err != nil {
			// The file is still whole, only longer; try again later.
			rf.compactAt = 2 * rf.records
			rf.failedLocked("compact the replay file", err)
		}
	}
	if !rf.headerLocked(cov) {
		return
	}
	rf.buf = appendReplayRecord(rf.buf[:0], e)
	if _, err := rf.f.WriteAt(rf.buf, rf.size); err != nil {
		rf.failedLocked("write the replay file", err)
		// Cut off what part of the record went in, and stop vouching for
		// knocks sealed before this one's expiry.
		_ = rf.f.Truncate(rf.size)
		rf.lostUntil = e.Expiry.Add(time.Second)
		rf.headerLocked(cov)
		return
	}
	rf.size += int64(len(rf.buf))
	rf.records++
}

// vouchedLocked is the header cov should have on disk: since never before
// a lost record.
func (rf *replayFile) vouchedLocked(cov gate.ReplayCoverage) gate.ReplayCoverage {
	if cov.Since.Before(rf.lostUntil) {
		cov.Since = rf.lostUntil.Truncate(time.Second).Add(time.Second)
	}
	return cov
}

// headerLocked brings the header up to date with cov. When it cannot, it
// removes the file, which vouches for nothing then, and reports false.
func (rf *replayFile) headerLocked(cov gate.ReplayCoverage) bool {
	want := rf.vouchedLocked(cov)
	if want.Since.Equal(rf.onDisk.Since) && want.Tolerance == rf.onDisk.Tolerance {
		return true
	}
	if _, err := rf.f.WriteAt(appendReplayHeader(nil, want), 0); err != nil {
		rf.failedLocked("write the replay file's header; removed it, a restart will refuse knocks sealed before it", err)
		_ = os.Remove(rf.path)
		rf.f.Close()
		rf.f = nil
		return false
	}
	rf.onDisk = want
	return true
}

// compactLocked rewrites the file with its records not yet expired.
func (rf *replayFile) compactLocked(cov gate.ReplayCoverage) error {
	data := make([]byte, rf.size)
	if _, err := rf.f.ReadAt(data, 0); err != nil {
		return fmt.Errorf("read it back: %w", err)
	}
	mem, err := parseReplayFile(data, rf.clock())
	if err != nil {
		return err
	}
	b := appendReplayHeader(make([]byte, 0, replayHeaderSize+len(mem.entries)*replayRecordSize), rf.vouchedLocked(cov))
	for _, e := range mem.entries {
		b = appendReplayRecord(b, e)
	}
	return rf.replaceLocked(b, rf.vouchedLocked(cov), len(mem.entries))
}

// replaceLocked puts content (a header for cov and records) in place of
// the file: written to a locked temporary file, then renamed over it, so
// that a crash leaves one whole file or the other.
func (rf *replayFile) replaceLocked(content []byte, cov gate.ReplayCoverage, records int) error {
	tmp, err := os.CreateTemp(filepath.Dir(rf.path), filepath.Base(rf.path)+".*")
	if err != nil {
		return fmt.Errorf("rewrite replay file: %w", err)
	}
	fail := func(err error) error {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("rewrite replay file %s: %w", rf.path, err)
	}
	if err := lockFile(tmp); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(content); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), rf.path); err != nil {
		return fail(err)
	}
	rf.f.Close()
	rf.f, rf.size, rf.records, rf.onDisk = tmp, int64(len(content)), records, cov
	rf.compactAt = max(replayCompactAt, 2*records)
	return nil
}

// failedLocked counts a failure and logs it unless a line went out less
// than replayLogEvery ago.
func (rf *replayFile) failedLocked(what string, err error) {
	rf.failures++
	now := rf.clock()
	if !rf.loggedAt.IsZero() && now.Sub(rf.loggedAt) < replayLogEvery {
		return
	}
	rf.log.Error("replay file: "+what+"; grants go on, protected from replay while sknockd runs",
		zap.String("file", rf.path), zap.Int("failures", rf.failures), zap.Error(err))
	rf.failures, rf.loggedAt = 0, now
}

// close closes the file; remember does nothing afterwards.
func (rf *replayFile) close() {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	if rf.f != nil {
		rf.f.Close()
		rf.f = nil
	}
}

// lockFile takes an exclusive lock on f without waiting; the kernel drops
// it when f is closed or the process dies.
func lockFile(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return errors.New("in use by another sknockd (each needs its own knock.replay_file)")
		}
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}

// replayFileProblem says why the replay file at path could not be kept
// (for --check, which creates nothing): it is not set, it exists but
// cannot be read and written, or its directory is missing and cannot be
// created, or is not writable. Nil: it can be kept.
func replayFileProblem(path string) error {
	if path == "" {
		return errors.New("knock.replay_file is empty")
	}
	if _, err := os.Stat(path); err == nil {
		if err := unix.Access(path, unix.R_OK|unix.W_OK); err != nil {
			return fmt.Errorf("%s: cannot read and write it: %w", path, err)
		}
		return nil
	}
	dir := filepath.Dir(path)
	for {
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			return fmt.Errorf("%s is not a directory", dir)
		case err == nil:
			if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
				return fmt.Errorf("directory %s: not writable: %w", dir, err)
			}
			return nil // the file, and any missing directory, can be made
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("directory %s: %w", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return fmt.Errorf("no directory of %s exists", path)
		}
		dir = parent
	}
}
