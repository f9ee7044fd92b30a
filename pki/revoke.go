package pki

import (
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Revoke records the certificate issued as name in DIR/revoked.json; the
// next WriteCRL publishes it.
func Revoke(dir, name string) error {
	if err := revoke(dir, name); err != nil {
		return fmt.Errorf("revoke %s in %s: %w", name, dir, err)
	}
	return nil
}

func revoke(dir, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	idx, err := loadIndex(dir)
	if err != nil {
		return err
	}
	e := idx.find(name)
	if e == nil {
		return fmt.Errorf("no certificate named %s in %s", name, IndexFile)
	}
	rev, err := loadRevoked(dir)
	if err != nil {
		return err
	}
	if rev.has(e.Serial) {
		return fmt.Errorf("serial %s: already revoked", e.Serial)
	}
	rev.Revoked = append(rev.Revoked, revokedEntry{Name: name, Serial: e.Serial, RevokedAt: time.Now().UTC()})
	return rev.save(dir)
}

// RevokeSerial records one certificate issued as name, by its serial
// (decimal), as revoked: an older one than the current (a renewed
// certificate), which Revoke does not reach.
func RevokeSerial(dir, name, serial string) error {
	idx, err := loadIndex(dir)
	if err != nil {
		return fmt.Errorf("revoke %s serial %s in %s: %w", name, serial, dir, err)
	}
	for _, e := range idx.Certificates {
		if e.Name == name && e.Serial == serial {
			if err := revokeSerial(dir, name, serial); err != nil {
				return fmt.Errorf("revoke %s serial %s in %s: %w", name, serial, dir, err)
			}
			return nil
		}
	}
	return fmt.Errorf("revoke %s in %s: no certificate named %s with serial %s in %s (see 'sknock pki list')", name, dir, name, serial, IndexFile)
}

// revokedList is DIR/revoked.json: revoked serials and the last CRL number.
type revokedList struct {
	CRLNumber int64          `json:"crl_number"`
	Revoked   []revokedEntry `json:"revoked"`
}

type revokedEntry struct {
	Name      string    `json:"name"`
	Serial    string    `json:"serial"` // decimal
	RevokedAt time.Time `json:"revoked_at"`
}

func loadRevoked(dir string) (*revokedList, error) {
	var r revokedList
	return &r, loadJSON(filepath.Join(dir, RevokedFile), &r)
}

// has reports whether serial (decimal) is revoked.
func (r *revokedList) has(serial string) bool {
	return slices.ContainsFunc(r.Revoked, func(e revokedEntry) bool { return e.Serial == serial })
}

func (r *revokedList) save(dir string) error { return saveJSON(filepath.Join(dir, RevokedFile), r) }
