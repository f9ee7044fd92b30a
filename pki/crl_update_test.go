package pki_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/pki"
)

// TestCheckCRLUpdate: a source's CRL may be replaced only by a CRL of the
// same CA that is not older; CRL numbers of different CAs are never
// compared; a first fetch refuses a CRL past its next update.
func TestCheckCRLUpdate(t *testing.T) {
	a := testpki.New(t, nil)
	b := testpki.New(t, nil)
	a.WriteCRL(t)
	aOld := a.LoadCRL(t)
	a.WriteCRL(t)
	aNew := a.LoadCRL(t)
	for range 3 { // B's numbers run ahead of A's
		b.WriteCRL(t)
	}
	bCRL := b.LoadCRL(t)
	now := time.Now()
	for _, tt := range []struct {
		name          string
		fetched, held *pki.CRL
		now           time.Time
		want          []string // in the error; none: accepted
	}{
		{name: "newer, same CA", fetched: aNew, held: aOld, now: now},
		{name: "the same", fetched: aNew, held: aNew, now: now},
		{name: "older, same CA", fetched: aOld, held: aNew, now: now, want: []string{"older"}},
		{name: "another CA, higher number", fetched: bCRL, held: aOld, now: now, want: []string{"signed by " + pki.CAName(b.Server.CAs[0]), "the CRL of " + pki.CAName(a.Server.CAs[0])}},
		{name: "another CA, lower number", fetched: aOld, held: bCRL, now: now, want: []string{"signed by " + pki.CAName(a.Server.CAs[0])}},
		{name: "first fetch", fetched: aNew, now: now},
		{name: "first fetch, stale", fetched: aNew, now: aNew.NextUpdate.Add(time.Hour), want: []string{"first fetch", "has passed"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := pki.CheckCRLUpdate(tt.fetched, tt.held, tt.now)
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, pki.ErrCRLUpdate) {
				t.Fatalf("err = %v, want ErrCRLUpdate", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err %q lacks %q", err, w)
				}
			}
		})
	}
	if pki.CAName(a.Server.CAs[0]) == pki.CAName(b.Server.CAs[0]) {
		t.Error("two CAs with one subject have one name")
	}
}
