package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"path/filepath"
	"time"
)

// RenewOptions tune Renew.
type RenewOptions struct {
	IssueOptions
	// Allow replaces a client certificate's authorisation when
	// SetAllow is true; otherwise the renewed certificate keeps the old
	// one's.
	Allow    Authorization
	SetAllow bool
	// KeepKey certifies the old certificate's key again instead of a new
	// one: for the server, whose clients encrypt to that key, so that
	// clients still holding the old certificate keep working. It reads
	// the old bundle with the password.
	KeepKey bool
	// RevokeOld records the old certificate as revoked (publish it with
	// WriteCRL): for a lost or stolen key. Not with KeepKey.
	RevokeOld bool
}

// Renewal is what Renew did.
type Renewal struct {
	// Kind is "server" or "client".
	Kind string
	// OldSerial and NewSerial are the certificates' serials, decimal.
	OldSerial, NewSerial string
	// NotAfter is the new certificate's end.
	NotAfter time.Time
	// Authorization is the new certificate's, in the CLI form.
	Authorization string
	// Archived names the old files, now DIR/NAME.OLDSERIAL.pfx and .pem.
	Archived string
}

// ErrKeepKeyRevoke is returned when a renewal would both keep the key and
// revoke the old certificate: a key that must be revoked must not be
// certified again.
var ErrKeepKeyRevoke = errors.New("keeping the key of a certificate being revoked")

// Renew issues a new certificate and bundle for the name's current
// certificate (server or client): same kind, same authorisation unless
// opts.SetAllow, a new key unless opts.KeepKey. The old files are kept as
// DIR/NAME.OLDSERIAL.pfx and .pem, the new ones written as DIR/NAME.pfx
// and .pem; the old certificate stays valid unless opts.RevokeOld.
func Renew(dir, name, password string, opts RenewOptions) (*Renewal, error) {
	r, err := renew(dir, name, password, opts)
	if err != nil {
		return nil, fmt.Errorf("renew %s in %s: %w", name, dir, err)
	}
	return r, nil
}

func renew(dir, name, password string, opts RenewOptions) (*Renewal, error) {
	if opts.KeepKey && opts.RevokeOld {
		return nil, ErrKeepKeyRevoke
	}
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	idx, err := loadIndex(dir)
	if err != nil {
		return nil, err
	}
	cur := idx.find(name)
	if cur == nil {
		return nil, fmt.Errorf("no certificate named %s in %s", name, IndexFile)
	}
	old := *cur
	req := issueRequest{dir: dir, name: name, password: password, opts: opts.IssueOptions, kind: old.Kind, renew: true}
	switch {
	case opts.SetAllow && old.Kind != "client":
		return nil, fmt.Errorf("%s is a %s certificate: it carries no authorisation", name, old.Kind)
	case opts.SetAllow:
		req.allow = opts.Allow
	case old.Authorization != "":
		if req.allow, err = ParseAuthorization(old.Authorization); err != nil {
			return nil, fmt.Errorf("%s: authorisation of %s: %w", IndexFile, name, err)
		}
	}
	if opts.KeepKey {
		b, err := LoadBundle(filepath.Join(dir, name+".pfx"), password)
		if err != nil {
			return nil, fmt.Errorf("keep the key: %w", err)
		}
		req.key = b.Key
	}
	entry, err := issue(req)
	if err != nil {
		return nil, err
	}
	if opts.RevokeOld {
		if err := revokeSerial(dir, name, old.Serial); err != nil {
			return nil, fmt.Errorf("renewed, but revoking the old serial %s failed: %w", old.Serial, err)
		}
	}
	return &Renewal{
		Kind: old.Kind, OldSerial: old.Serial, NewSerial: entry.Serial, NotAfter: entry.NotAfter,
		Authorization: req.allow.CLIString(), Archived: filepath.Join(dir, name+"."+old.Serial+".pfx"),
	}, nil
}

// revokeSerial records serial, issued as name, as revoked.
func revokeSerial(dir, name, serial string) error {
	rev, err := loadRevoked(dir)
	if err != nil {
		return err
	}
	if rev.has(serial) {
		return nil
	}
	rev.Revoked = append(rev.Revoked, revokedEntry{Name: name, Serial: serial, RevokedAt: time.Now().UTC()})
	return rev.save(dir)
}

// Issued is one certificate of a CA directory, as List returns it.
type Issued struct {
	Name string `json:"name"`
	// Kind is "server" or "client".
	Kind   string `json:"kind"`
	Serial string `json:"serial"`
	// Authorization is a client's, in the CLI form ("tcp/22,udp/8000");
	// empty for a server or a client without one.
	Authorization string    `json:"authorization"`
	NotAfter      time.Time `json:"not_after"`
	Revoked       bool      `json:"revoked"`
	// Current is false for a certificate renewed or issued again since.
	Current bool `json:"current"`
}

// List returns every certificate issued in dir, in the order issued.
func List(dir string) ([]Issued, error) {
	idx, err := loadIndex(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	rev, err := loadRevoked(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	out := make([]Issued, 0, len(idx.Certificates))
	for i, e := range idx.Certificates {
		authz := e.Authorization
		if a, err := ParseAuthorization(e.Authorization); err == nil && e.Authorization != "" {
			authz = a.CLIString()
		}
		out = append(out, Issued{
			Name: e.Name, Kind: e.Kind, Serial: e.Serial, Authorization: authz,
			NotAfter: e.NotAfter, Revoked: rev.has(e.Serial), Current: idx.find(e.Name) == &idx.Certificates[i],
		})
	}
	return out, nil
}

// CRLStatus describes DIR/ca.crl.
type CRLStatus struct {
	ThisUpdate, NextUpdate time.Time
	Number                 *big.Int
	Revoked                int
}

// ReadCRLStatus reads and checks DIR/ca.crl against the CA.
func ReadCRLStatus(dir string) (*CRLStatus, error) {
	certs, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	crl, err := LoadCRL(filepath.Join(dir, CRLFile), certs[:1])
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no CRL in %s yet: write one with 'sknock pki crl': %w", dir, err)
	}
	if err != nil {
		return nil, err
	}
	return &CRLStatus{ThisUpdate: crl.ThisUpdate, NextUpdate: crl.NextUpdate, Number: crl.Number, Revoked: crl.Len()}, nil
}
