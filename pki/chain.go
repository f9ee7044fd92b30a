package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"time"
)

// chainCacheLabel keeps the cache keys of VerifyChain apart from those of
// Verify, which checks a certificate differently (it asks for clientAuth
// where usage is restricted; VerifyChain does not).
const chainCacheLabel = "sknock v2 chain"

// VerifyChain checks a knock v2 chain at now, as PROTOCOL-v2.md step 7
// says: chain is the client certificate, then the intermediates the knock
// carries, each the issuer of the one before. The path is exactly the one
// given, continued through the configured CAs from the last certificate's
// issuer to a trust anchor; no other path is ever built (this is not
// x509.Verify, which builds its own paths and checks ServerAuth by
// default). Every certificate above the client's must be a CA
// (basicConstraints cA=TRUE, keyCertSign where keyUsage is present, its
// pathLen respected), every certificate of the path must be within its
// validity period at now, and every one but the anchor must not be
// revoked by the CRL. The client certificate must have a P-256 key, not
// be a CA, and allow digitalSignature where keyUsage is present; extended
// key usage is not checked. The error wraps one of the Err* sentinels.
//
// A chain that verified is cached like a certificate in Verify; later
// calls re-check only the time window.
func (v *Verifier) VerifyChain(chain [][]byte, now time.Time) (*Client, error) {
	if v.crl.refuses(now) {
		return nil, fmt.Errorf("%w: revocation status unknown: %w since %s (crl.stale: refuse)", ErrRevoked, ErrCRLStale, v.crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%w: empty chain", ErrMalformedCertificate)
	}
	h := sha256.New()
	h.Write([]byte(chainCacheLabel))
	for _, der := range chain {
		h.Write(der)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if e, ok := v.cache.get(sum); ok && e.validAt(now) {
		return e.client, nil
	}
	client, window, err := v.verifyChain(chain, now)
	if err != nil {
		return nil, err
	}
	v.cache.add(sum, &cacheEntry{client: client, timeWindow: window})
	return client, nil
}

func (v *Verifier) verifyChain(chain [][]byte, now time.Time) (*Client, timeWindow, error) {
	var window timeWindow
	path := make([]*x509.Certificate, 0, len(chain)+2)
	for i, der := range chain {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, window, fmt.Errorf("%w: chain certificate %d: %w", ErrMalformedCertificate, i, err)
		}
		path = append(path, cert)
	}
	leaf := path[0]
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, window, fmt.Errorf("%w: %s key", ErrKeyType, leaf.PublicKeyAlgorithm)
	}
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return nil, window, fmt.Errorf("%w: %s is a CA certificate", ErrUsage, leaf.Subject)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, window, fmt.Errorf("%w: key usage lacks digitalSignature", ErrUsage)
	}
	for i := 1; i < len(path); i++ {
		if err := checkIssued(path[i-1], path[i]); err != nil {
			return nil, window, fmt.Errorf("%w: chain certificate %d (%s): %w", ErrUntrusted, i-1, path[i-1].Subject, err)
		}
	}
	// The configured CAs take over from the last certificate sent: its
	// issuer must be one of them, and so must every issuer above, up to
	// a trust anchor.
	path, err := v.extendConfigured(path)
	if err != nil {
		return nil, window, err
	}
	window = timeWindow{notBefore: leaf.NotBefore, notAfter: leaf.NotAfter}
	for i, c := range path {
		if i > 0 {
			if err := checkCA(c, i-1); err != nil {
				return nil, window, fmt.Errorf("%w: %s: %w", ErrUntrusted, c.Subject, err)
			}
		}
		if now.Before(c.NotBefore) {
			return nil, window, fmt.Errorf("%w: %s valid from %s, now %s", ErrNotYetValid, c.Subject, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if now.After(c.NotAfter) {
			return nil, window, fmt.Errorf("%w: %s valid until %s, now %s", ErrExpired, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		if i < len(path)-1 && v.crl.Revoked(c.SerialNumber) {
			return nil, window, fmt.Errorf("%w: %s (serial %s)", ErrRevoked, c.Subject, c.SerialNumber)
		}
		window.notBefore = later(window.notBefore, c.NotBefore)
		window.notAfter = earlier(window.notAfter, c.NotAfter)
	}
	authz, found, err := AuthorizationFromCertificate(leaf)
	if err != nil {
		return nil, window, fmt.Errorf("%w: %w", ErrMalformedCertificate, err)
	}
	return &Client{
		Cert:             leaf,
		PublicKey:        pub,
		Serial:           leaf.SerialNumber,
		Subject:          leaf.Subject.String(),
		Authorization:    authz,
		HasAuthorization: found,
	}, window, nil
}

// extendConfigured continues path from its last certificate through the
// configured CAs to a trust anchor (a configured CA that no other
// configured CA issued). The last certificate of path may itself be a
// configured CA.
func (v *Verifier) extendConfigured(path []*x509.Certificate) ([]*x509.Certificate, error) {
	last := path[len(path)-1]
	if v.isConfigured(last) && !IsIntermediate(last, v.cas) {
		return path, nil // the knock sent the anchor itself
	}
	for range len(v.cas) + 1 {
		issuer := v.configuredIssuer(last)
		if issuer == nil {
			if len(path) == 1 {
				return nil, fmt.Errorf("%w: %s is not issued by a configured CA", ErrUntrusted, last.Subject)
			}
			return nil, fmt.Errorf("%w: the chain's last certificate %s is not issued by a configured CA", ErrUntrusted, last.Subject)
		}
		path = append(path, issuer)
		if !IsIntermediate(issuer, v.cas) {
			return path, nil
		}
		last = issuer
	}
	return nil, fmt.Errorf("%w: the configured CAs issue each other in a loop", ErrUntrusted)
}

// isConfigured reports whether c is one of the configured CAs.
func (v *Verifier) isConfigured(c *x509.Certificate) bool {
	for _, ca := range v.cas {
		if ca.Equal(c) {
			return true
		}
	}
	return false
}

// configuredIssuer returns the configured CA whose name is c's issuer
// and whose key signed c, or nil.
func (v *Verifier) configuredIssuer(c *x509.Certificate) *x509.Certificate {
	for _, ca := range v.cas {
		if ca.Equal(c) {
			continue
		}
		if checkIssued(c, ca) == nil {
			return ca
		}
	}
	return nil
}

// checkIssued checks that issuer's name is child's issuer and that its key
// signed child. Whether issuer may act as a CA is checkCA's part.
func checkIssued(child, issuer *x509.Certificate) error {
	if !bytes.Equal(child.RawIssuer, issuer.RawSubject) {
		return fmt.Errorf("issuer %s is not named by it", issuer.Subject)
	}
	if err := issuer.CheckSignature(child.SignatureAlgorithm, child.RawTBSCertificate, child.Signature); err != nil {
		return fmt.Errorf("signature not made by %s: %w", issuer.Subject, err)
	}
	return nil
}

// checkCA checks that c may issue certificates with below CA
// certificates under it before the client's: basicConstraints with
// cA=TRUE, keyCertSign where keyUsage is present, a pathLen of at least
// below.
func checkCA(c *x509.Certificate, below int) error {
	if !c.BasicConstraintsValid || !c.IsCA {
		return fmt.Errorf("not a CA certificate (basicConstraints cA=TRUE missing)")
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("key usage lacks keyCertSign")
	}
	if c.MaxPathLen >= 0 && (c.MaxPathLen > 0 || c.MaxPathLenZero) && below > c.MaxPathLen {
		return fmt.Errorf("pathLen %d, but %d CA certificates below it", c.MaxPathLen, below)
	}
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
