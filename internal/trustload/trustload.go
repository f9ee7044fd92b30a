// Package trustload builds the gatekeeper's trust state from its files:
// the server's PKCS#12 bundle, the CA certificates and the CRL. sknockd
// and `sknock inspect` both load through it, so inspect decides a knock
// exactly as the daemon would. Fetching the CRL from a URL is sknockd's
// business: it happens between the two steps, [LoadCerts] and
// [Certs.Trust], once the CAs that must have signed the CRL are known.
package trustload

import (
	"crypto/x509"
	"fmt"
	"time"

	"sknock/gate"
	"sknock/pki"
)

// Input names the file a load failed on.
type Input int

// The inputs of a trust state.
const (
	// Bundle is the server's PKCS#12 bundle: unreadable, a wrong
	// password, or a key that cannot decrypt knocks.
	Bundle Input = iota + 1
	// CA is the CA certificate file.
	CA
	// CRL is the CRL file.
	CRL
)

// Error is what LoadCerts and Certs.Trust return: the input that failed
// and the cause, whose text names the file. sknockd prefixes the config
// key of Input; sknock inspect prints the cause alone.
type Error struct {
	// Input is the file that failed.
	Input Input
	// Err is the cause; it names the file.
	Err error
}

// Error returns the cause's text.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Certs is the first half of a trust state: the server bundle and the CA
// certificates a client certificate must chain to.
type Certs struct {
	// BundlePath is the file Bundle came from.
	BundlePath string
	// Bundle holds the server's key, which decrypts knocks.
	Bundle *pki.Bundle
	// CAs are the CA file's certificates, or the bundle's when no CA
	// file was named. Empty when the bundle holds none: Trust then
	// fails, and a caller that wants to say so earlier checks here.
	CAs []*x509.Certificate
}

// LoadCerts reads the bundle at bundlePath with password, and the CA
// certificates (PEM or DER) at caPath; an empty caPath means the CA
// certificates inside the bundle.
func LoadCerts(bundlePath, password, caPath string) (*Certs, error) {
	bundle, err := pki.LoadBundle(bundlePath, password)
	if err != nil {
		return nil, &Error{Input: Bundle, Err: err}
	}
	cas := bundle.CAs
	if caPath != "" {
		if cas, err = pki.LoadCertificates(caPath); err != nil {
			return nil, &Error{Input: CA, Err: err}
		}
	}
	return &Certs{BundlePath: bundlePath, Bundle: bundle, CAs: cas}, nil
}

// Trust reads the CRL at crlPath (DER or PEM), which one of the CAs must
// have signed, and builds the trust state with the knock timestamp
// tolerance. An empty crlPath means no CRL: nothing is revoked. The CRL is
// returned too (nil without one), for the caller to describe.
func (c *Certs) Trust(crlPath string, tolerance time.Duration) (*gate.Trust, *pki.CRL, error) {
	var crl *pki.CRL
	if crlPath != "" {
		var err error
		if crl, err = pki.LoadCRL(crlPath, c.CAs); err != nil {
			return nil, nil, &Error{Input: CRL, Err: err}
		}
	}
	trust, err := c.TrustCRL(crl, tolerance)
	if err != nil {
		return nil, nil, err
	}
	return trust, crl, nil
}

// TrustCRL builds the trust state with a CRL already loaded (nil: nothing
// is revoked), such as several CAs' CRLs combined with [pki.Combine].
func (c *Certs) TrustCRL(crl *pki.CRL, tolerance time.Duration) (*gate.Trust, error) {
	trust, err := gate.NewTrust(c.Bundle, c.CAs, crl, tolerance)
	if err != nil {
		return nil, &Error{Input: Bundle, Err: fmt.Errorf("%s: %w", c.BundlePath, err)}
	}
	return trust, nil
}
