package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"sknock/gate"
	"sknock/internal/config"
	"sknock/internal/crlfetch"
	"sknock/internal/trustload"
	"sknock/pki"
)

// Fetcher gets a CRL URL, conditionally on the validators of the version
// this host holds; the daemon's is crlfetch over HTTP(S), tests pass a
// fake.
type Fetcher func(ctx context.Context, url string, prev crlfetch.Validators) (crlfetch.Result, error)

// httpFetch is the real Fetcher: one conditional GET, bounded in time and
// size, that never follows a redirect from https to http.
var httpFetch Fetcher = crlfetch.New(nil).Fetch

// crlValidators remember, per URL, the validators of the CRL last written
// from it, so that the next fetch of an unchanged CRL is a 304. Safe for
// concurrent use; the zero value is ready.
type crlValidators struct {
	mu    sync.Mutex
	byURL map[string]crlfetch.Validators
}

func (v *crlValidators) get(url string) crlfetch.Validators {
	if v == nil {
		return crlfetch.Validators{}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.byURL[url]
}

func (v *crlValidators) set(url string, val crlfetch.Validators) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.byURL == nil {
		v.byURL = map[string]crlfetch.Validators{}
	}
	v.byURL[url] = val
}

// TrustInfo describes a loaded trust state, for logging and warnings.
type TrustInfo struct {
	// Server is the server certificate's subject, ServerNotAfter its end.
	Server         string
	ServerNotAfter time.Time
	// CAs are the CA certificates, each with the CRL that covers it.
	CAs []CAInfo
	// CRLs are the CRLs applied, in the configuration's order.
	CRLs []CRLInfo
	// Pending are the sources left out because their file does not
	// exist yet (only with buildTrust's pendingOK, for --check).
	Pending []config.CRLSource
	// StaleRefuse is crl.stale: refuse.
	StaleRefuse bool
	// Digest identifies the contents of the CRL files the state was
	// built from: a refresh that finds the same digest changes nothing.
	Digest [sha256.Size]byte
}

// CAInfo describes one CA certificate.
type CAInfo struct {
	Subject  string
	NotAfter time.Time
	// CRL is the key of the source of its CRL ("crl", "crl.extra[0]"),
	// or "" when no configured CRL is signed by it.
	CRL string
}

// CRLInfo describes one CRL applied.
type CRLInfo struct {
	Key, File, Issuer      string
	Serials                int
	ThisUpdate, NextUpdate time.Time
}

// Serials returns how many serials the CRLs revoke together.
func (i TrustInfo) Serials() int {
	n := 0
	for _, c := range i.CRLs {
		n += c.Serials
	}
	return n
}

// readPassword returns the server bundle's password from the file or the
// environment variable the config names (ParseConfig allows only one; the
// variable wins, as it always has, in a Config built by hand).
func readPassword(c *config.Config) (string, error) {
	file, env := c.ServerPasswordFile, c.ServerPasswordEnv
	if env != "" {
		file = ""
	} else if file == "" {
		return "", nil
	}
	pw, err := pki.ReadPassword(file, env)
	var pe *pki.PasswordError
	switch {
	case err == nil:
		return pw, nil
	case env != "":
		return "", fmt.Errorf("server.password_env: environment variable %s is not set", env)
	case errors.Is(err, pki.ErrEmptyPassword):
		return "", fmt.Errorf("server.password_file: %s: %w", file, pki.ErrEmptyPassword)
	case errors.As(err, &pe):
		return "", fmt.Errorf("server.password_file: %w", pe.Err)
	}
	return "", fmt.Errorf("server.password_file: %w", err)
}

// trustKeys are the config keys naming each input of the trust state, for
// error messages.
var trustKeys = map[trustload.Input]string{
	trustload.Bundle: "server.pkcs12",
	trustload.CA:     "server.ca",
	trustload.CRL:    "crl.file",
}

// keyedTrustError prefixes a trustload error with the config key of the
// file that failed.
func keyedTrustError(err error) error {
	var le *trustload.Error
	if errors.As(err, &le) {
		return fmt.Errorf("%s: %w", trustKeys[le.Input], le.Err)
	}
	return err
}

// fetchWhich says which CRL URLs a trust load fetches.
type fetchWhich int

const (
	fetchNone    fetchWhich = iota // read the files only (--check, SIGHUP)
	fetchMissing                   // fetch the CRLs whose file does not exist yet (the start)
	fetchAll                       // fetch every URL (the refresh)
)

// trustLoad is how loadTrust gets the CRLs.
type trustLoad struct {
	which      fetchWhich
	fetch      Fetcher
	validators *crlValidators
	// pendingOK leaves out a CRL whose file does not exist yet but
	// has a URL (--check: the start fetches it).
	pendingOK bool
	// now is the clock a first fetch's staleness is judged by; nil means
	// time.Now.
	now func() time.Time
}

// loadCerts reads the server bundle and the CA certificates.
func loadCerts(c *config.Config) (*trustload.Certs, error) {
	pw, err := readPassword(c)
	if err != nil {
		return nil, err
	}
	certs, err := trustload.LoadCerts(c.ServerPKCS12, pw, c.ServerCA)
	if err != nil {
		return nil, keyedTrustError(err)
	}
	if len(certs.CAs) == 0 { // before the CRL, which is checked against them
		return nil, fmt.Errorf("server.pkcs12: %s holds no CA certificate; name one in server.ca", c.ServerPKCS12)
	}
	return certs, nil
}

// loadState reads the configuration's trust state: the server bundle,
// the CAs and the CRLs, through trustload as `sknock inspect` does,
// fetching the CRLs first as how says. A failed fetch is a warning (the
// file's copy stays); only a CRL that neither the fetch nor the file
// gives is an error. Nothing is half-loaded: it returns a whole state or
// an error naming the key or file.
func loadState(ctx context.Context, c *config.Config, how trustLoad) (state, []error, error) {
	certs, err := loadCerts(c)
	if err != nil {
		return state{}, nil, err
	}
	warnings := fetchCRLs(ctx, c, certs.CAs, how)
	trust, info, err := buildTrust(c, certs, how.pendingOK)
	if err != nil && len(warnings) > 0 {
		// The fetch's own failure is the root cause of a missing CRL.
		err = fmt.Errorf("%w: %w", err, errors.Join(warnings...))
	}
	if err != nil {
		return state{info: info}, warnings, err
	}
	return state{cfg: c, trust: trust, certs: certs, info: info}, warnings, nil
}

// fetchCRLs fetches the CRL sources' URLs as how says, each into its
// file, and returns what failed as warnings.
func fetchCRLs(ctx context.Context, c *config.Config, cas []*x509.Certificate, how trustLoad) []error {
	if how.fetch == nil || how.which == fetchNone {
		return nil
	}
	now := time.Now
	if how.now != nil {
		now = how.now
	}
	sources := c.CRLSources()
	held := heldCRLs(sources, cas)
	var warnings []error
	for i, src := range sources {
		if src.URL == "" {
			continue
		}
		if how.which == fetchMissing {
			if _, err := os.Stat(src.File); !errors.Is(err, fs.ErrNotExist) {
				continue
			}
		}
		if err := fetchCRL(ctx, how.fetch, how.validators, src, cas, otherOwner(sources, held, i), now()); err != nil {
			keeping := " (keeping " + src.File + ")"
			if _, statErr := os.Stat(src.File); statErr != nil {
				keeping = ""
			}
			warnings = append(warnings, fmt.Errorf("%s: %w%s", src.URLKey(), err, keeping))
		}
	}
	return warnings
}

// heldCRLs returns the CRL each source's file holds (nil where it holds
// none that verifies).
func heldCRLs(sources []config.CRLSource, cas []*x509.Certificate) []*pki.CRL {
	held := make([]*pki.CRL, len(sources))
	for i, src := range sources {
		held[i], _ = pki.LoadCRL(src.File, cas)
	}
	return held
}

// otherOwner returns, for a first fetch into source i, a function naming
// the other source whose file holds a CRL of the CA ca ("" when none):
// that CA's CRL belongs to that source.
func otherOwner(sources []config.CRLSource, held []*pki.CRL, i int) func(ca *x509.Certificate) string {
	return func(ca *x509.Certificate) string {
		for j, crl := range held {
			if j != i && crl != nil && pki.SameCA(crl.Issuer, ca) {
				return sources[j].FileKey() + " (" + sources[j].File + ")"
			}
		}
		return ""
	}
}

// fetchCRL downloads src's CRL (conditionally), checks it against the
// CAs and against what the source holds (pki.CheckCRLUpdate: the same
// CA's, not older; on a first fetch not stale, and not the CA of another
// source, which owner names), and only then replaces the file atomically,
// so a bad download never overwrites a good CRL. A 304 leaves the file as
// it is.
func fetchCRL(ctx context.Context, fetch Fetcher, vals *crlValidators, src config.CRLSource, cas []*x509.Certificate, owner func(*x509.Certificate) string, now time.Time) error {
	prev := vals.get(src.URL)
	if _, err := os.Stat(src.File); err != nil {
		prev = crlfetch.Validators{} // nothing held: ask for the whole CRL
	}
	res, err := fetch(ctx, src.URL, prev)
	if err != nil {
		return err
	}
	if res.NotModified {
		return nil
	}
	fetched, err := pki.ParseCRL(res.Data, cas)
	if err != nil {
		return fmt.Errorf("fetched from %s: %w", src.URL, err)
	}
	cur, err := os.ReadFile(src.File)
	if err == nil && bytes.Equal(cur, res.Data) {
		vals.set(src.URL, res.Validators)
		return nil // unchanged: keep the file
	}
	var held *pki.CRL
	if err == nil {
		held, _ = pki.ParseCRL(cur, cas) // a damaged or foreign file holds nothing
	}
	if held == nil {
		if other := owner(fetched.Issuer); other != "" {
			return fmt.Errorf("fetched from %s: %w: signed by %s, whose CRL is %s's (each CRL source belongs to one CA)", src.URL, pki.ErrCRLUpdate, pki.CAName(fetched.Issuer), other)
		}
	}
	if err := pki.CheckCRLUpdate(fetched, held, now); err != nil {
		return fmt.Errorf("fetched from %s for %s: %w", src.URL, src.File, err)
	}
	if err := os.MkdirAll(filepath.Dir(src.File), 0o755); err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(src.File, res.Data, 0o644); err != nil {
		return err
	}
	vals.set(src.URL, res.Validators)
	return nil
}

// crlDigest hashes the contents of every CRL source's file, in order; a
// file that cannot be read counts as empty. It streams each file through
// the hash: a refresh tick that finds nothing changed allocates nothing
// the size of a CRL.
func crlDigest(c *config.Config) [sha256.Size]byte {
	h := sha256.New()
	for _, src := range c.CRLSources() {
		file := sha256.New()
		if f, err := os.Open(src.File); err == nil {
			if _, err := io.Copy(file, f); err != nil {
				file.Reset() // unreadable: as empty
			}
			f.Close()
		}
		fmt.Fprintf(h, "%s\x00", src.File)
		h.Write(file.Sum(nil))
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// buildTrust reads the CRL files and builds the trust state over certs:
// every CRL signed by one of the CAs, no CA with two CRLs, every CA with
// one when crl.required is set; the CRLs are combined (pki.Combine), and
// made to refuse every knock once stale when crl.stale is refuse. With
// pendingOK (--check), a source with a URL whose file does not exist yet
// is left out and listed in info.Pending: the start fetches it.
func buildTrust(c *config.Config, certs *trustload.Certs, pendingOK bool) (*gate.Trust, TrustInfo, error) {
	info := TrustInfo{
		Server:         certs.Bundle.Cert.Subject.String(),
		ServerNotAfter: certs.Bundle.Cert.NotAfter,
		StaleRefuse:    c.CRLStaleRefuse,
		Digest:         crlDigest(c),
	}
	for _, ca := range certs.CAs {
		info.CAs = append(info.CAs, CAInfo{Subject: ca.Subject.String(), NotAfter: ca.NotAfter})
	}
	var crls []*pki.CRL
	for _, src := range c.CRLSources() {
		crl, err := pki.LoadCRL(src.File, certs.CAs)
		if err != nil && pendingOK && src.URL != "" && errors.Is(err, fs.ErrNotExist) {
			info.Pending = append(info.Pending, src)
			continue
		}
		if err != nil {
			if src.URL != "" && errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w; no CRL: fetching %s gave none either", err, src.URL)
			}
			return nil, info, fmt.Errorf("%s: %w", src.FileKey(), err)
		}
		for i, ca := range certs.CAs {
			if ca != crl.Issuer {
				continue
			}
			if info.CAs[i].CRL != "" {
				return nil, info, fmt.Errorf("%s: %s is a second CRL of CA %s (the first is %s's); give each CA one CRL", src.FileKey(), src.File, ca.Subject, info.CAs[i].CRL)
			}
			info.CAs[i].CRL = src.Key
		}
		info.CRLs = append(info.CRLs, CRLInfo{Key: src.Key, File: src.File, Issuer: crl.Issuer.Subject.String(),
			Serials: crl.Len(), ThisUpdate: crl.ThisUpdate, NextUpdate: crl.NextUpdate})
		crls = append(crls, crl)
	}
	if c.CRLRequired && len(info.Pending) == 0 {
		for _, ca := range info.CAs {
			if ca.CRL == "" {
				return nil, info, fmt.Errorf("crl.required: CA %s has no CRL; name it in crl.file (or crl.extra for a further CA), or set crl.required: false", ca.Subject)
			}
		}
	}
	crl := pki.Combine(crls...)
	if c.CRLStaleRefuse {
		crl = crl.RefusingWhenStale()
	}
	trust, err := certs.TrustCRL(crl, c.KnockTolerance)
	if err != nil {
		return nil, info, keyedTrustError(err)
	}
	return trust, info, nil
}
