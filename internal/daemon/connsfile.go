package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"

	"sknock/gate"
)

// The connection record (which certificate opened each connection the
// gate let in) is kept beside the replay file, in knock.replay_file +
// ".conns", so that a revocation after a restart, a kill -9 or an
// upgrade still ends the connections opened before it. The engine writes
// and reads its form (gate.Engine.WriteSavedConns, RestoreConns); this
// file puts it on disk: streamed whole into a temporary file renamed over
// it when the record changed (gate.Engine.ConnsChanges), at most every
// connsSaveEvery, and once more at stop. Like the replay file it is not
// synced: the page cache survives kill -9, and a reboot ends every
// connection anyway.
const (
	// connsSaveEvery bounds what a kill -9 loses: the connections opened
	// in the last connsSaveEvery before it, which a later revocation
	// then cannot find.
	connsSaveEvery = 2 * time.Second
	// connsFileMax bounds what is read back: the saved form of a full
	// record (about 80 bytes a connection) and its certificates.
	connsFileMax = 64 << 20
)

// connsFileOf returns where the connection record of a daemon whose
// replay file is replay is kept ("": nowhere).
func connsFileOf(replay string) string {
	if replay == "" {
		return ""
	}
	return replay + ".conns"
}

// connsFile keeps the engine's connection record in path.
type connsFile struct {
	path   string
	engine *gate.Engine
	log    *zap.Logger

	mu       sync.Mutex
	saved    uint64    // the record's ConnsChanges that the file holds
	written  bool      // saved is known: the file was written or restored
	loggedAt time.Time // the last failure logged
}

// restoreConns restores the connection record an earlier run kept in
// path into the engine, ends the connections of the certificates that no
// longer verify (revoked or expired while sknockd was stopped), and
// returns the file, ready to keep the record. A missing file restores
// nothing; a damaged one is logged and replaced at the first save.
func (d *daemon) restoreConns(path string) *connsFile {
	cf := &connsFile{path: path, engine: d.engine, log: d.log}
	data, err := readBounded(path, connsFileMax)
	if errors.Is(err, os.ErrNotExist) {
		return cf
	}
	var res gate.Restored
	if err == nil {
		res, err = d.engine.RestoreConns(data)
	}
	if err != nil {
		d.log.Warn("connection record of the previous run not restored: a revocation will not end the connections opened before this start",
			zap.String("file", path), zap.Error(err))
		return cf
	}
	if len(res.Ended.Conns) == 0 {
		cf.saved, cf.written = d.engine.ConnsChanges(), true // the file holds the record
	}
	d.log.Info("connection record restored",
		zap.String("file", path), zap.Int("connections", res.Conns), zap.Int("certificates", res.Certs),
		zap.Int("certificates_refused", len(res.Refused)), zap.Int("did_not_fit", res.Full), zap.Time("saved", res.SavedAt))
	for id, why := range res.Refused {
		d.log.Warn("certificate of restored connections no longer verifies: its connections end",
			zap.String("certificate", fmt.Sprintf("%x", id[:])), zap.Error(why))
	}
	if _, err := d.endConns(res.Ended.Conns, "connections of certificates revoked while sknockd was stopped ended"); err != nil {
		d.log.Error("could not end every connection of the certificates revoked while sknockd was stopped; those go on until they close", zap.Error(err))
	}
	return cf
}

// readBounded reads path, refusing one larger than max bytes.
func readBounded(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, max)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(data)) > max {
		err = fmt.Errorf("%s: grew beyond %d bytes while read", path, max)
	}
	return data, err
}

// run saves the record every connsSaveEvery until ctx is done.
func (cf *connsFile) run(ctx context.Context) {
	t := time.NewTicker(connsSaveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cf.save()
		}
	}
}

// save writes the record if it changed since the last save.
func (cf *connsFile) save() {
	cf.mu.Lock()
	defer cf.mu.Unlock()
	changes := cf.engine.ConnsChanges() // before the write: a change during it saves again
	if cf.written && changes == cf.saved {
		return
	}
	if err := cf.replace(cf.engine.WriteSavedConns); err != nil {
		if now := time.Now(); cf.loggedAt.IsZero() || now.Sub(cf.loggedAt) >= time.Minute {
			cf.loggedAt = now
			cf.log.Error("connection record not saved: a revocation after a restart will not end the connections opened since the last save",
				zap.String("file", cf.path), zap.Error(err))
		}
		return
	}
	cf.saved, cf.written = changes, true
}

// replace puts what write writes in place of the file: written to a
// temporary file, then renamed over it, so that a crash leaves one whole
// file or the other.
func (cf *connsFile) replace(write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(cf.path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(cf.path), filepath.Base(cf.path)+".*")
	if err != nil {
		return err
	}
	err = write(tmp)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), cf.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
