package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"sknock/gate"
	"sknock/internal/trustload"
	"sknock/pki"
)

// maxCRLSize bounds a fetched CRL (a million revoked serials is ~40 MB).
const maxCRLSize = 256 << 20

// Fetcher gets the bytes at url; the daemon's is HTTP(S), tests pass a
// fake.
type Fetcher func(ctx context.Context, url string) ([]byte, error)

// httpFetch is the real Fetcher: one GET with a timeout and a size bound.
func httpFetch(ctx context.Context, url string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCRLSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxCRLSize {
		return nil, fmt.Errorf("larger than %d bytes", maxCRLSize)
	}
	return data, nil
}

// TrustInfo describes a loaded trust state, for logging.
type TrustInfo struct {
	Server     string
	CAs        []string
	CRLSerials int
	CRLNext    time.Time
	CRLStale   bool
}

// readPassword returns the server bundle's password from the file or the
// environment variable the config names (ParseConfig allows only one; the
// variable wins, as it always has, in a Config built by hand).
func readPassword(c *Config) (string, error) {
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

// loadTrust reads every file the trust state needs: the server bundle, the
// CAs and the CRL, through trustload as `sknock inspect` does. With crl.url
// set and fetch non-nil, it fetches the CRL first (keeping the file's copy
// when the fetch fails). Nothing is half-loaded: it returns a whole Trust
// or an error naming the key or file.
func loadTrust(ctx context.Context, c *Config, fetch Fetcher) (*gate.Trust, TrustInfo, []error, error) {
	var info TrustInfo
	pw, err := readPassword(c)
	if err != nil {
		return nil, info, nil, err
	}
	certs, err := trustload.LoadCerts(c.ServerPKCS12, pw, c.ServerCA)
	if err != nil {
		return nil, info, nil, keyedTrustError(err)
	}
	if len(certs.CAs) == 0 { // before the CRL, which is checked against them
		return nil, info, nil, fmt.Errorf("server.pkcs12: %s holds no CA certificate; name one in server.ca", c.ServerPKCS12)
	}
	var warnings []error
	if c.CRLURL != "" && fetch != nil {
		if err := fetchCRL(ctx, fetch, c.CRLURL, certs.CAs, c.CRLFile); err != nil {
			warnings = append(warnings, fmt.Errorf("crl.url: %w (keeping %s)", err, c.CRLFile))
		}
	}
	trust, crl, err := certs.Trust(c.CRLFile, c.KnockTolerance)
	if err != nil {
		return nil, info, warnings, keyedTrustError(err)
	}
	if crl != nil {
		info.CRLSerials, info.CRLNext = crl.Len(), crl.NextUpdate
		info.CRLStale = crl.Stale(time.Now())
	}
	info.Server = certs.Bundle.Cert.Subject.String()
	for _, ca := range certs.CAs {
		info.CAs = append(info.CAs, ca.Subject.String())
	}
	return trust, info, warnings, nil
}

// fetchCRL downloads the CRL, checks it against the CAs, and only then
// replaces dest atomically, so a bad download never overwrites a good CRL.
func fetchCRL(ctx context.Context, fetch Fetcher, url string, cas []*x509.Certificate, dest string) error {
	data, err := fetch(ctx, url)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	fetched, err := pki.ParseCRL(data, cas)
	if err != nil {
		return fmt.Errorf("fetched from %s: %w", url, err)
	}
	if cur, err := os.ReadFile(dest); err == nil {
		if bytes.Equal(cur, data) {
			return nil // unchanged: keep the file, and the certificate cache
		}
		// An older CRL, from a stale mirror or an attacker on a plain
		// http:// path, would un-revoke certificates: refuse it.
		if old, err := pki.ParseCRL(cur, cas); err == nil && olderCRL(fetched, old) {
			return fmt.Errorf("fetched from %s: CRL number %v (this update %s) is older than %s's %v (%s); keeping %s",
				url, fetched.Number, fetched.ThisUpdate.UTC().Format(time.RFC3339), dest, old.Number, old.ThisUpdate.UTC().Format(time.RFC3339), dest)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	return pki.WriteFileAtomic(dest, data, 0o644)
}

// olderCRL reports whether a was issued before b: by CRL number when both
// have one, else by thisUpdate.
func olderCRL(a, b *pki.CRL) bool {
	if a.Number != nil && b.Number != nil {
		return a.Number.Cmp(b.Number) < 0
	}
	return a.ThisUpdate.Before(b.ThisUpdate)
}
