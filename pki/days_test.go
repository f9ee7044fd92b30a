package pki

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// daysTests are validities in days around the bound; a wantErr value
// would otherwise wrap the end of the validity around, into the past.
var daysTests = []struct {
	name    string
	give    int
	wantErr bool
}{
	{name: "default", give: 0},
	{name: "one", give: 1},
	{name: "max", give: MaxDays},
	{name: "above max", give: MaxDays + 1, wantErr: true},
	{name: "wraps to 1842", give: 1_000_000, wantErr: true},
	{name: "max int", give: math.MaxInt, wantErr: true},
	{name: "negative", give: -1, wantErr: true},
}

// TestInitCADays: InitCA refuses a number of days that would overflow
// with ErrDays and writes nothing; what it accepts ends in the future.
func TestInitCADays(t *testing.T) {
	for _, tt := range daysTests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ca")
			err := InitCA(dir, tt.give)
			if tt.wantErr {
				if !errors.Is(err, ErrDays) {
					t.Fatalf("InitCA(%d days) = %v, want ErrDays", tt.give, err)
				}
				if _, err := os.Stat(filepath.Join(dir, CACertFile)); err == nil {
					t.Errorf("InitCA(%d days) failed but wrote %s", tt.give, CACertFile)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cas, err := LoadCertificates(filepath.Join(dir, CACertFile))
			if err != nil {
				t.Fatal(err)
			}
			if !cas[0].NotAfter.After(time.Now()) {
				t.Errorf("InitCA(%d days): NotAfter %s is not in the future", tt.give, cas[0].NotAfter)
			}
		})
	}
}

// TestIssueAndCRLDays: IssueServer, IssueClient and WriteCRL refuse the
// same numbers of days with ErrDays.
func TestIssueAndCRLDays(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if err := InitCA(dir, MaxDays); err != nil {
		t.Fatal(err)
	}
	for i, tt := range daysTests {
		t.Run(tt.name, func(t *testing.T) {
			name := "server" + string(rune('a'+i))
			err := IssueServer(dir, name, "pw", IssueOptions{Days: tt.give})
			if got := errors.Is(err, ErrDays); got != tt.wantErr || (err != nil && !tt.wantErr) {
				t.Errorf("IssueServer(%d days) = %v, want ErrDays %v", tt.give, err, tt.wantErr)
			}
			err = IssueClient(dir, "client"+string(rune('a'+i)), Authorization{}, "pw", IssueOptions{Days: tt.give})
			if got := errors.Is(err, ErrDays); got != tt.wantErr || (err != nil && !tt.wantErr) {
				t.Errorf("IssueClient(%d days) = %v, want ErrDays %v", tt.give, err, tt.wantErr)
			}
			if !tt.wantErr {
				certs, err := LoadCertificates(filepath.Join(dir, name+".pem"))
				if err != nil {
					t.Fatal(err)
				}
				if !certs[0].NotAfter.After(time.Now()) {
					t.Errorf("IssueServer(%d days): NotAfter %s is not in the future", tt.give, certs[0].NotAfter)
				}
			}
			err = WriteCRL(dir, tt.give)
			if got := errors.Is(err, ErrDays); got != tt.wantErr || (err != nil && !tt.wantErr) {
				t.Errorf("WriteCRL(%d days) = %v, want ErrDays %v", tt.give, err, tt.wantErr)
			}
		})
	}
}
