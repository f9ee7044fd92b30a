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
	if slices.ContainsFunc(rev.Revoked, func(r revokedEntry) bool { return r.Serial == e.Serial }) {
		return fmt.Errorf("serial %s: already revoked", e.Serial)
	}
	rev.Revoked = append(rev.Revoked, revokedEntry{Name: name, Serial: e.Serial, RevokedAt: time.Now().UTC()})
	return rev.save(dir)
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

func (r *revokedList) save(dir string) error { return saveJSON(filepath.Join(dir, RevokedFile), r) }
