package pki

import (
	"path/filepath"
	"time"
)

// index is DIR/index.json: every certificate issued, by name.
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

func (x *index) find(name string) *indexEntry {
	for i := range x.Certificates {
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
