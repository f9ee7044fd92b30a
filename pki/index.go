package pki

import (
	"path/filepath"
	"time"
)

// index is DIR/index.json: every certificate issued, by name, in the
// order issued; a name renewed or issued again appears once per
// certificate, the last being the current one.
type index struct {
	Certificates []indexEntry `json:"certificates"`
}

type indexEntry struct {
	Name          string    `json:"name"`
	Kind          string    `json:"kind"`   // "server" or "client"
	Serial        string    `json:"serial"` // decimal
	NotAfter      time.Time `json:"not_after"`
	Authorization string    `json:"authorization,omitempty"` // wire form
}

// find returns the current (last issued) certificate named name, or nil.
func (x *index) find(name string) *indexEntry {
	for i := len(x.Certificates) - 1; i >= 0; i-- {
		if x.Certificates[i].Name == name {
			return &x.Certificates[i]
		}
	}
	return nil
}

func loadIndex(dir string) (*index, error) {
	var x index
	return &x, loadJSON(filepath.Join(dir, IndexFile), &x)
}

func (x *index) save(dir string) error { return saveJSON(filepath.Join(dir, IndexFile), x) }
