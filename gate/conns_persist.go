package gate

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"sknock/packet"
)

// The connection record outlives a restart through a saved form, so that
// a revocation after a restart still ends the connections the
// certificate opened before it (the daemon keeps it beside the replay
// file). WriteSavedConns writes it as a stream, RestoreConns reads it
// back. All integers are big-endian:
//
//	header  magic "sknockC2" | saved at (Unix ns, int64)
//	record  proto (uint8) | source (16) | source port (uint16)
//	        | destination (16) | destination port (uint16)
//	        | first accepted (Unix ns, int64) | certificates (uint8)
//	        | that many CertIDs (16 each)
//	cert    CertID (16) | chain length (uint8; 0: the certificate alone,
//	        a v1 knock's) | certificate DER, then the chain's
//	        intermediates, each: length (uint32) | DER
//	trailer records (uint32) | certificates (uint32)
//	        | CRC-32 (IEEE) of everything before it (uint32)
//
// The counts trail the records so that the form is written in one pass,
// a shard at a time, through a small buffer: a save holds no copy of the
// whole record, and holds each shard's lock only to copy its records.
// Only the certificates the records name are saved: a grant does not
// outlive a restart, the connections it let in do.
const (
	savedConnsMagic = "sknockC2"
	// savedConnsMaxDER bounds one certificate's DER in the saved form (a
	// knock carries far less).
	savedConnsMaxDER = 64 << 10
	// savedConnsMaxChain bounds a saved chain: the certificate and its
	// intermediates.
	savedConnsMaxChain = 8
	// savedConnsHeader and savedConnsTrailer are the fixed parts' sizes.
	savedConnsHeader  = len(savedConnsMagic) + 8
	savedConnsTrailer = 4 + 4 + 4
)

// errSavedConnsCorrupt is why a saved record was not restored: it is not
// what WriteSavedConns writes.
var errSavedConnsCorrupt = errors.New("not a saved sknock connection record, or damaged")

// ConnsChanges returns a number that grows with every change to the
// connection record (a connection recorded, attributed to one more
// certificate, or forgotten): a save can be skipped while it stays.
func (e *Engine) ConnsChanges() uint64 {
	if t := e.conns.Load(); t != nil {
		return t.changes()
	}
	return 0
}

// WriteSavedConns writes the saved form of the connection record, and of
// the certificates it names, to w. Records naming a certificate the
// registry no longer knows keep the CertID; RestoreConns restores such
// records attributed to none. It holds each shard's lock only while it
// copies that shard's records, and writes through a buffer of its own:
// it allocates no copy of the record. Calls run one at a time.
func (e *Engine) WriteSavedConns(w io.Writer) error {
	e.saveMu.Lock()
	defer e.saveMu.Unlock()
	crc := crc32.NewIEEE()
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var b [savedRecordMax]byte
	bw.Write(append(b[:0], savedConnsMagic...))
	bw.Write(binary.BigEndian.AppendUint64(b[:0], uint64(e.clock().UnixNano())))
	var records, certs uint32
	attributed := map[CertID]bool{} // of the records written, not of the record later
	if t := e.conns.Load(); t != nil {
		for i := range t.shards {
			e.saveScratch = t.copyShard(i, e.saveScratch[:0])
			for j := range e.saveScratch {
				rec := &e.saveScratch[j]
				bw.Write(appendSavedRecord(b[:0], rec))
				for _, c := range rec.certs[:rec.n] {
					if !c.IsZero() {
						attributed[c] = true
					}
				}
				records++
			}
		}
	}
	for id, n := range e.grants.certs.known() {
		if !attributed[id] || !savable(n) {
			continue
		}
		writeSavedCert(bw, id, n)
		certs++
	}
	bw.Write(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(b[:0], records), certs))
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("save the connection record: %w", err)
	}
	// The CRC of everything written, after it: not through crc itself.
	if _, err := w.Write(binary.BigEndian.AppendUint32(b[:0], crc.Sum32())); err != nil {
		return fmt.Errorf("save the connection record: %w", err)
	}
	return nil
}

// savable reports whether n fits the saved form's bounds (a chain no knock
// carries does not: its connections are restored attributed to none).
func savable(n noted) bool {
	chain := n.links()
	if len(chain) > savedConnsMaxChain {
		return false
	}
	for _, der := range chain {
		if len(der) == 0 || len(der) > savedConnsMaxDER {
			return false
		}
	}
	return true
}

// writeSavedCert writes certificate id, noted as n, in the saved form.
func writeSavedCert(w *bufio.Writer, id CertID, n noted) {
	w.Write(id[:])
	w.WriteByte(uint8(len(n.chain))) // 0: the certificate alone
	var l [4]byte
	for _, der := range n.links() {
		binary.BigEndian.PutUint32(l[:], uint32(len(der)))
		w.Write(l[:])
		w.Write(der)
	}
}

// savedRecordMax is the size of the longest saved record.
const savedRecordMax = 1 + 16 + 2 + 16 + 2 + 8 + 1 + 16*MaxShares

func appendSavedRecord(b []byte, r *connRecord) []byte {
	b = append(b, byte(r.key.proto))
	b = append(b, r.key.src[:]...)
	b = binary.BigEndian.AppendUint16(b, r.key.sport)
	b = append(b, r.key.dst[:]...)
	b = binary.BigEndian.AppendUint16(b, r.key.dport)
	b = binary.BigEndian.AppendUint64(b, uint64(r.at))
	b = append(b, r.n)
	for _, c := range r.certs[:r.n] {
		b = append(b, c[:]...)
	}
	return b
}

// Restored is what RestoreConns did with a saved connection record.
type Restored struct {
	// SavedAt is when the record was saved.
	SavedAt time.Time
	// Conns is how many connections it restored, Certs how many
	// certificates still verify.
	Conns, Certs int
	// Full is how many connections did not fit in the record.
	Full int
	// Ended is what no longer verifies under the current trust (revoked
	// or expired while sknockd was stopped): the connections attributed to
	// those certificates, which the caller must end in the kernel.
	Ended Ended
	// Refused says why each certificate of Ended no longer verifies.
	Refused map[CertID]error
}

// savedCert is one certificate of a saved record.
type savedCert struct {
	id    CertID
	chain [][]byte // the certificate first
	v2    bool     // verified by its chain (a v2 knock's), not alone
}

// RestoreConns restores a connection record that WriteSavedConns saved
// (by an earlier run) into the engine's, verifying every certificate it
// names again under the current trust: the connections of those that no
// longer verify are removed again and returned in Restored.Ended, to be
// ended. Call it before the gate reads its first packet. A record that
// is not what WriteSavedConns writes restores nothing and returns an
// error saying where it went wrong. It keeps nothing of data.
func (e *Engine) RestoreConns(data []byte) (Restored, error) {
	certs, recs, savedAt, err := parseSavedConns(data)
	if err != nil {
		return Restored{}, err
	}
	res := Restored{SavedAt: savedAt}
	trust := e.trust.Load()
	now := e.clock()
	refused := map[CertID]error{}
	for _, c := range certs {
		if trust == nil || trust.Verifier == nil {
			refused[c.id] = errors.New("no trust state to verify it")
			continue
		}
		var chain [][]byte
		if c.v2 {
			chain = c.chain
		}
		client, err := verifyAgain(trust.Verifier, c.chain[0], chain, now)
		if err != nil {
			refused[c.id] = err
			continue
		}
		e.grants.certs.note(c.id, client, chain)
		res.Certs++
	}
	e.connsOnce.Do(func() { e.conns.Store(newConnTable(e.cfg.MaxConns)) })
	t := e.conns.Load()
	for i := range recs {
		r := &recs[i]
		h := r.key.conn().header()
		if !t.record(&h, r.certs[:r.n], r.at) {
			res.Full++
			continue
		}
		res.Conns++
	}
	res.Ended = e.endCerts(refused, now)
	res.Refused = refused
	return res, nil
}

// parseSavedConns decodes a saved connection record.
func parseSavedConns(data []byte) (certs []savedCert, recs []connRecord, savedAt time.Time, err error) {
	if len(data) < savedConnsHeader+savedConnsTrailer || string(data[:len(savedConnsMagic)]) != savedConnsMagic {
		return nil, nil, time.Time{}, fmt.Errorf("header: %w", errSavedConnsCorrupt)
	}
	body := data[:len(data)-4]
	if crc32.ChecksumIEEE(body) != binary.BigEndian.Uint32(data[len(body):]) {
		return nil, nil, time.Time{}, fmt.Errorf("checksum: %w", errSavedConnsCorrupt)
	}
	savedAt = time.Unix(0, int64(binary.BigEndian.Uint64(body[len(savedConnsMagic):])))
	counts := data[len(data)-savedConnsTrailer:]
	nRecs := binary.BigEndian.Uint32(counts)
	nCerts := binary.BigEndian.Uint32(counts[4:])
	p := data[savedConnsHeader : len(data)-savedConnsTrailer]
	take := func(n int) []byte {
		if n < 0 || len(p) < n {
			err = errSavedConnsCorrupt
			return nil
		}
		out := p[:n]
		p = p[n:]
		return out
	}
	const recordMin = 1 + 16 + 2 + 16 + 2 + 8 + 1
	if uint64(nRecs)*recordMin > uint64(len(p)) {
		return nil, nil, time.Time{}, fmt.Errorf("%d records in %d bytes: %w", nRecs, len(p), errSavedConnsCorrupt)
	}
	recs = make([]connRecord, 0, nRecs)
	for i := uint32(0); i < nRecs; i++ {
		b := take(recordMin)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("record %d: %w", i, err)
		}
		var r connRecord
		r.key.proto = packet.Proto(b[0])
		copy(r.key.src[:], b[1:17])
		r.key.sport = binary.BigEndian.Uint16(b[17:])
		copy(r.key.dst[:], b[19:35])
		r.key.dport = binary.BigEndian.Uint16(b[35:])
		r.at = int64(binary.BigEndian.Uint64(b[37:]))
		r.n = b[45]
		if r.n == 0 || r.n > MaxShares || (r.key.proto != packet.TCP && r.key.proto != packet.UDP) {
			return nil, nil, time.Time{}, fmt.Errorf("record %d: %w", i, errSavedConnsCorrupt)
		}
		for j := range int(r.n) {
			copy(r.certs[j][:], take(16))
		}
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("record %d: %w", i, err)
		}
		// A CertID the saved certificates do not hold is kept: the
		// record is then attributed to a certificate no revocation can
		// name, like a connection whose certificate was forgotten.
		recs = append(recs, r)
	}
	for i := uint32(0); i < nCerts; i++ {
		var c savedCert
		copy(c.id[:], take(16))
		n := take(1)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("certificate %d: %w", i, err)
		}
		links := int(n[0])
		c.v2 = links > 0
		if links == 0 {
			links = 1
		}
		if links > savedConnsMaxChain {
			return nil, nil, time.Time{}, fmt.Errorf("certificate %d: chain of %d: %w", i, links, errSavedConnsCorrupt)
		}
		for range links {
			l := take(4)
			if err != nil {
				return nil, nil, time.Time{}, fmt.Errorf("certificate %d: %w", i, err)
			}
			size := binary.BigEndian.Uint32(l)
			if size == 0 || size > savedConnsMaxDER {
				return nil, nil, time.Time{}, fmt.Errorf("certificate %d: %d bytes: %w", i, size, errSavedConnsCorrupt)
			}
			der := take(int(size))
			if err != nil {
				return nil, nil, time.Time{}, fmt.Errorf("certificate %d: %w", i, err)
			}
			// A copy: the certificate parsed from it keeps it (Raw),
			// and the caller may reuse data.
			c.chain = append(c.chain, bytes.Clone(der))
		}
		if CertIDOf(c.chain[0]) != c.id {
			return nil, nil, time.Time{}, fmt.Errorf("certificate %d: not the one its id names: %w", i, errSavedConnsCorrupt)
		}
		certs = append(certs, c)
	}
	if len(p) != 0 {
		return nil, nil, time.Time{}, fmt.Errorf("%d bytes after the records: %w", len(p), errSavedConnsCorrupt)
	}
	return certs, recs, savedAt, nil
}
