package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"
)

// Reasons a client certificate is refused, for errors.Is. Verify wraps them
// with detail.
var (
	ErrMalformedCertificate = errors.New("malformed certificate")
	ErrUntrusted            = errors.New("certificate not issued by a trusted CA")
	ErrExpired              = errors.New("certificate expired")
	ErrNotYetValid          = errors.New("certificate not yet valid")
	ErrRevoked              = errors.New("certificate revoked")
	ErrKeyType              = errors.New("certificate key is not P-256 ECDSA")
	ErrUsage                = errors.New("certificate not usable as a knock client certificate")
)

// MaxCachedCertificates bounds a Verifier's cache of verified certificates.
const MaxCachedCertificates = 65536

// Client is a verified client certificate and what sknock needs from it.
// A Client returned by Verify may be shared between calls: treat it, and
// its Authorization, as read-only.
type Client struct {
	// Cert is the parsed certificate.
	Cert *x509.Certificate
	// PublicKey is its P-256 key, which verifies the knock's signature.
	PublicKey *ecdsa.PublicKey
	// Serial is its serial number, as the CRL lists it.
	Serial *big.Int
	// Subject is the certificate's subject, e.g. "CN=client-a,O=Vector Test".
	Subject string
	// Authorization is what the certificate allows; empty when
	// HasAuthorization is false.
	Authorization Authorization
	// HasAuthorization reports whether the certificate carries the
	// authorisation name at all; without it, it authorises nothing.
	HasAuthorization bool
}

// Verifier checks client certificates against a fixed set of CAs and an
// optional CRL. It is immutable and safe for concurrent use; reloading trust
// means building a new Verifier.
type Verifier struct {
	cas           []*x509.Certificate
	roots         *x509.CertPool
	intermediates *x509.CertPool
	crl           *CRL
	cache         verifiedCache
}

// NewVerifier returns a Verifier trusting cas and refusing the
// certificates crl revokes. crl may be nil (nothing is revoked). Among
// cas, a certificate signed by another of them is an intermediate CA: a
// client certificate it issued chains through it to that CA, and a CRL
// revoking the intermediate refuses it. Every other certificate of cas is
// a trust anchor (a root, or an intermediate listed without its issuer).
// The CRL is applied to every certificate of a chain but its anchor,
// whatever its issuer, so with several CAs a serial revoked by one is
// refused under all (fail closed).
func NewVerifier(cas []*x509.Certificate, crl *CRL) *Verifier {
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	for _, ca := range cas {
		if IsIntermediate(ca, cas) {
			intermediates.AddCert(ca)
		} else {
			roots.AddCert(ca)
		}
	}
	return &Verifier{cas: cas, roots: roots, intermediates: intermediates, crl: crl}
}

// IsIntermediate reports whether ca is an intermediate among cas: not
// self-signed, and signed by another certificate of cas.
func IsIntermediate(ca *x509.Certificate, cas []*x509.Certificate) bool {
	if bytes.Equal(ca.RawIssuer, ca.RawSubject) && ca.CheckSignatureFrom(ca) == nil {
		return false
	}
	for _, other := range cas {
		if other != ca && !other.Equal(ca) && bytes.Equal(ca.RawIssuer, other.RawSubject) && ca.CheckSignatureFrom(other) == nil {
			return true
		}
	}
	return false
}

// CRL returns the CRL the Verifier applies, or nil.
func (v *Verifier) CRL() *CRL { return v.crl }

// Verify checks the DER client certificate der at time now: it parses,
// chains to one of the CAs, is within its validity period (and so are the
// CAs), has a P-256 ECDSA key, is not a CA, allows digitalSignature and
// clientAuth when it restricts usage, carries a well-formed authorisation
// name if any, and is not revoked. The error wraps one of the Err*
// sentinels. A CRL made with [CRL.RefusingWhenStale] refuses every
// certificate once stale (ErrRevoked and ErrCRLStale).
//
// A certificate that verified once is cached; later calls only re-check the
// time window, which is all that can change while the Verifier lives.
func (v *Verifier) Verify(der []byte, now time.Time) (*Client, error) {
	if v.crl.refuses(now) {
		return nil, fmt.Errorf("%w: revocation status unknown: %w since %s (crl.stale: refuse)", ErrRevoked, ErrCRLStale, v.crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	sum := sha256.Sum256(der)
	if e, ok := v.cache.get(sum); ok && e.validAt(now) {
		return e.client, nil
	}
	client, window, err := v.verify(der, now)
	if err != nil {
		return nil, err
	}
	v.cache.add(sum, &cacheEntry{client: client, timeWindow: window})
	return client, nil
}

type timeWindow struct{ notBefore, notAfter time.Time }

func (w timeWindow) validAt(now time.Time) bool {
	return !now.Before(w.notBefore) && !now.After(w.notAfter)
}

func (v *Verifier) verify(der []byte, now time.Time) (*Client, timeWindow, error) {
	var window timeWindow
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, window, fmt.Errorf("%w: %w", ErrMalformedCertificate, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, window, fmt.Errorf("%w: %s key", ErrKeyType, cert.PublicKeyAlgorithm)
	}
	if cert.IsCA {
		return nil, window, fmt.Errorf("%w: %s is a CA certificate", ErrUsage, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, window, fmt.Errorf("%w: key usage lacks digitalSignature", ErrUsage)
	}
	if now.Before(cert.NotBefore) {
		return nil, window, fmt.Errorf("%w: valid from %s, now %s", ErrNotYetValid, cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(cert.NotAfter) {
		return nil, window, fmt.Errorf("%w: valid until %s, now %s", ErrExpired, cert.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	usage := x509.ExtKeyUsageAny
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		usage = x509.ExtKeyUsageClientAuth
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: v.intermediates,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, window, v.chainError(cert, now, err)
	}
	if v.crl.Revoked(cert.SerialNumber) {
		return nil, window, fmt.Errorf("%w: serial %s", ErrRevoked, cert.SerialNumber)
	}
	if chains, err = v.unrevokedChains(chains); err != nil {
		return nil, window, err
	}
	authz, found, err := AuthorizationFromCertificate(cert)
	if err != nil {
		return nil, window, fmt.Errorf("%w: %w", ErrMalformedCertificate, err)
	}
	window = timeWindow{notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	for _, c := range chains[0][1:] {
		if c.NotBefore.After(window.notBefore) {
			window.notBefore = c.NotBefore
		}
		if c.NotAfter.Before(window.notAfter) {
			window.notAfter = c.NotAfter
		}
	}
	return &Client{
		Cert:             cert,
		PublicKey:        pub,
		Serial:           cert.SerialNumber,
		Subject:          cert.Subject.String(),
		Authorization:    authz,
		HasAuthorization: found,
	}, window, nil
}

// unrevokedChains returns the chains none of whose intermediate CAs the
// CRL revokes, or an ErrRevoked error naming one when there is none.
func (v *Verifier) unrevokedChains(chains [][]*x509.Certificate) ([][]*x509.Certificate, error) {
	var ok [][]*x509.Certificate
	var revoked *x509.Certificate
	for _, chain := range chains {
		good := true
		for _, ca := range chain[1 : len(chain)-1] { // neither the leaf (checked) nor the anchor
			if v.crl.Revoked(ca.SerialNumber) {
				good, revoked = false, ca
				break
			}
		}
		if good {
			ok = append(ok, chain)
		}
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("%w: issuing CA %s (serial %s) is revoked", ErrRevoked, revoked.Subject, revoked.SerialNumber)
	}
	return ok, nil
}

// chainError maps an x509 chain-building error to a sentinel. The leaf's own
// window was checked already, so an Expired reason is about a CA.
func (v *Verifier) chainError(cert *x509.Certificate, now time.Time, err error) error {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) {
		switch invalid.Reason {
		case x509.Expired:
			for _, ca := range v.cas {
				if string(ca.RawSubject) == string(cert.RawIssuer) && now.Before(ca.NotBefore) {
					return fmt.Errorf("%w: issuing CA %s: %w", ErrNotYetValid, ca.Subject, err)
				}
			}
			return fmt.Errorf("%w: issuing CA: %w", ErrExpired, err)
		case x509.IncompatibleUsage:
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	return fmt.Errorf("%w: %w", ErrUntrusted, err)
}

// cacheEntry is a verified certificate and the window (leaf and chain
// validity intersected) in which that verification holds.
type cacheEntry struct {
	client *Client
	timeWindow
}

// verifiedCache maps sha256(DER) to a cacheEntry. Only certificates that
// verified go in: an attacker cannot add entries without a certificate the
// CA issued. Failures are not cached, because an attacker can vary the DER
// at will, so a failure cache would only fill with garbage without saving
// work. When the cache holds MaxCachedCertificates entries nothing more is
// added (no eviction): further certificates are simply verified in full on
// every knock, which is correct, only slower. Concurrent adds may overshoot
// the bound by at most the number of concurrent callers.
type verifiedCache struct {
	entries sync.Map // [sha256.Size]byte → *cacheEntry
	size    atomic.Int64
}

func (c *verifiedCache) get(key [sha256.Size]byte) (*cacheEntry, bool) {
	v, ok := c.entries.Load(key)
	if !ok {
		return nil, false
	}
	return v.(*cacheEntry), true
}

func (c *verifiedCache) add(key [sha256.Size]byte, e *cacheEntry) {
	if c.size.Load() >= MaxCachedCertificates {
		return
	}
	if _, loaded := c.entries.LoadOrStore(key, e); !loaded {
		c.size.Add(1)
	}
}
