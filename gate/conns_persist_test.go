package gate

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// restartedPair is natPair's engine saved and restored into a new one, as
// a restart of sknockd does with its connection record.
func restartedPair(t *testing.T, n *natPair, trust *Trust) (*Engine, Restored) {
	t.Helper()
	saved := n.e.AppendSavedConns(nil)
	e := NewEngine(Config{Clock: n.clock.Now, Policy: PolicyReject, OpenDuration: time.Minute}, trust)
	res, err := e.RestoreConns(saved)
	if err != nil {
		t.Fatalf("RestoreConns: %v", err)
	}
	clear(saved) // the daemon reuses the buffer for its next save
	return e, res
}

// TestRestoredConnsEndOnRevocation: connections recorded by one engine,
// whose grants have expired, are restored into the next (a restart), and
// revoking their certificate there, by CRL or by serial, ends exactly
// them: the restart case of the soak's grant-less revocation.
func TestRestoredConnsEndOnRevocation(t *testing.T) {
	for _, how := range []string{"crl", "serial"} {
		t.Run(how, func(t *testing.T) {
			n := newNatPair(t)
			n.knock(t, "carol", n.nat)
			n.knock(t, "alice", n.alice)
			n.connect(n.nat, 40001)
			n.knock(t, "dave", n.nat)
			n.connect(n.nat, 40002) // carol's and dave's
			n.connect(n.alice, 40003)
			n.clock.Advance(2 * time.Minute) // every grant has ended

			e, res := restartedPair(t, n, n.p.trust(t))
			// A reload that revokes no one ends nothing (the restored
			// certificates verify again, whatever became of the bytes
			// they were read from: the hour's soak found them
			// overwritten by the next save).
			if ended := e.SetTrust(n.p.trust(t)); len(ended.Conns) != 0 || len(ended.Grants) != 0 {
				t.Fatalf("a reload revoking no one ended %+v", ended)
			}
			if res.Conns != 3 || res.Certs != 3 || res.Full != 0 || len(res.Ended.Conns) != 0 {
				t.Fatalf("restored %+v, want 3 connections of 3 certificates, none ended", res)
			}
			var ended Ended
			switch how {
			case "crl":
				n.p.Revoke(t, "carol")
				ended = e.SetTrust(n.p.trust(t))
			case "serial":
				ended = e.EndGrants(Selection{Serial: n.p.Issued(t, "carol").Cert.SerialNumber})
			}
			if diff := cmp.Diff(sortedConns([]Conn{conn(n.nat, 40001), conn(n.nat, 40002)}), sortedConns(ended.Conns)); diff != "" {
				t.Errorf("carol's connections after the restart (-want +got):\n%s", diff)
			}
			if len(ended.Grants) != 0 {
				t.Errorf("ended grants %+v, want none (they expired before the restart)", ended.Grants)
			}
			if s := e.Snapshot(); s.Conns != 1 {
				t.Errorf("%d connections left, want alice's", s.Conns)
			}
		})
	}
}

// TestRestoreEndsConnsRevokedWhileStopped: a certificate revoked while
// sknockd was stopped has its restored connections ended at once.
func TestRestoreEndsConnsRevokedWhileStopped(t *testing.T) {
	n := newNatPair(t)
	n.knock(t, "carol", n.nat)
	n.knock(t, "alice", n.alice)
	n.connect(n.nat, 40001)
	n.connect(n.alice, 40003)
	n.p.Revoke(t, "carol")
	e, res := restartedPair(t, n, n.p.trust(t))
	if diff := cmp.Diff(sortedConns([]Conn{conn(n.nat, 40001)}), sortedConns(res.Ended.Conns)); diff != "" {
		t.Errorf("ended at restore (-want +got):\n%s", diff)
	}
	if res.Conns != 2 || res.Certs != 1 || len(res.Refused) != 1 {
		t.Errorf("restored %+v, want 2 connections, alice's certificate verified, carol's refused", res)
	}
	if s := e.Snapshot(); s.Conns != 1 {
		t.Errorf("%d connections left, want alice's", s.Conns)
	}
}

// TestSavedConnsDamaged: a saved record cut short anywhere, with a byte
// changed anywhere, or well checksummed but with a field out of range,
// restores nothing and says so; it never panics.
func TestSavedConnsDamaged(t *testing.T) {
	n := newNatPair(t)
	n.knock(t, "carol", n.nat)
	n.connect(n.nat, 40001)
	n.connect(n.nat, 40002)
	saved := n.e.AppendSavedConns(nil)
	fresh := func() *Engine {
		return NewEngine(Config{Clock: n.clock.Now, Policy: PolicyReject, OpenDuration: time.Minute}, n.p.trust(t))
	}
	for i := range saved {
		if _, err := fresh().RestoreConns(saved[:i]); err == nil {
			t.Fatalf("cut to %d of %d bytes: restored", i, len(saved))
		}
		b := append([]byte(nil), saved...)
		b[i] ^= 0x40
		if _, err := fresh().RestoreConns(b); err == nil {
			t.Fatalf("byte %d changed: restored", i)
		}
	}
	resum := func(b []byte) []byte {
		body := b[:len(b)-4]
		return binary.BigEndian.AppendUint32(append([]byte(nil), body...), crc32.ChecksumIEEE(body))
	}
	const header = savedConnsHeader
	for name, edit := range map[string]func(b []byte){
		"records count":  func(b []byte) { binary.BigEndian.PutUint32(b[len(b)-12:], 1<<30) },
		"certs count":    func(b []byte) { binary.BigEndian.PutUint32(b[len(b)-8:], 3) },
		"protocol":       func(b []byte) { b[header] = 99 },
		"certificates":   func(b []byte) { b[header+45] = 0 },
		"too many certs": func(b []byte) { b[header+45] = MaxShares + 1 },
	} {
		b := append([]byte(nil), saved...)
		edit(b)
		e := fresh()
		if _, err := e.RestoreConns(resum(b)); err == nil {
			t.Errorf("%s out of range: restored", name)
		} else if s := e.Snapshot(); s.Conns != 0 {
			t.Errorf("%s out of range: %d connections restored with the error %v", name, s.Conns, err)
		}
	}
	if res, err := fresh().RestoreConns(saved); err != nil || res.Conns != 2 {
		t.Errorf("the saved record itself: %+v, %v", res, err)
	}
}

// BenchmarkWriteSavedConns: saving a record of 100,000 connections (the
// daemon does it at most every 2 s while the record changes), to a
// writer that keeps nothing: what the save costs beside the file.
func BenchmarkWriteSavedConns(b *testing.B) {
	e := NewEngine(Config{Policy: PolicyReject, OpenDuration: time.Minute, MaxConns: 1 << 17}, nil)
	e.connsOnce.Do(func() { e.conns.Store(newConnTable(e.cfg.MaxConns)) })
	t := e.conns.Load()
	certs := []CertID{testCert(1)}
	for i := range 100_000 {
		h := connHeader(i)
		t.record(&h, certs, 1)
	}
	var w countingWriter
	b.ReportAllocs()
	for b.Loop() {
		w = 0
		if err := e.WriteSavedConns(&w); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(w), "bytes")
}

// countingWriter counts what is written to it.
type countingWriter int

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}

// AppendSavedConns appends WriteSavedConns' form to b and returns it (the
// tests' way to save).
func (e *Engine) AppendSavedConns(b []byte) []byte {
	w := appendWriter{b}
	e.WriteSavedConns(&w) // appending cannot fail
	return w.b
}

// appendWriter is an io.Writer appending to b.
type appendWriter struct{ b []byte }

func (w *appendWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}
