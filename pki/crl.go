package pki

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	stdasn1 "encoding/asn1"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// ErrCRLIssuer is returned (wrapped) when a CRL is not signed by any of the
// trusted CAs.
var ErrCRLIssuer = errors.New("CRL not signed by a trusted CA")

// ErrCRLScope is returned (wrapped) for a CRL that does not list every
// revoked certificate of its CA: a delta CRL (RFC 5280 5.2.4), a CRL whose
// issuing distribution point limits its scope (5.2.5), or one with a
// critical extension sknock does not know. Taken as complete, such a CRL
// would un-revoke whatever it leaves out.
var ErrCRLScope = errors.New("not a complete CRL")

// ErrCRLStale is returned (wrapped, beside ErrRevoked) by a Verifier whose
// CRL refuses knocks once past its nextUpdate (see [CRL.RefusingWhenStale]).
var ErrCRLStale = errors.New("CRL past its next update")

// CRL is a parsed certificate revocation list whose signature was checked
// against one of the trusted CAs. It is immutable.
type CRL struct {
	// ThisUpdate is when the CRL was issued.
	ThisUpdate time.Time
	// NextUpdate is when the next CRL is due; zero if the CRL has none.
	NextUpdate time.Time
	// Number is the CRL number extension, nil if absent.
	Number *big.Int
	// Issuer is the CA that signed the CRL; for CRLs combined with
	// [Combine], the first one's.
	Issuer *x509.Certificate

	// revoked holds serial.Bytes() of every revoked certificate.
	revoked map[string]struct{}
	// refuseStale makes a Verifier refuse every certificate once now is
	// past NextUpdate.
	refuseStale bool
}

// LoadCRL reads a DER or PEM ("X509 CRL") CRL from path and checks that one
// of cas signed it. Errors name the file.
func LoadCRL(path string, cas []*x509.Certificate) (*CRL, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load CRL %s: %w", path, err)
	}
	crl, err := ParseCRL(data, cas)
	if err != nil {
		return nil, fmt.Errorf("load CRL %s: %w", path, err)
	}
	return crl, nil
}

// ParseCRL parses a DER or PEM ("X509 CRL") CRL and checks that one of cas
// signed it: a CA whose subject is the CRL's issuer (and whose subject key
// identifier matches the CRL's authority key identifier, when both exist)
// and whose signature on the CRL verifies.
func ParseCRL(data []byte, cas []*x509.Certificate) (*CRL, error) {
	der := data
	if isPEM(data) {
		der = nil
		for rest := data; der == nil; {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				return nil, errors.New("parse CRL: no PEM X509 CRL block found")
			}
			if block.Type == "X509 CRL" {
				der = block.Bytes
			}
		}
	}
	// x509.ParseRevocationList builds a big.Int, a time and a struct per
	// entry (about 1 kB allocated per entry); for a CRL of a million
	// serials that is a gigabyte. So x509 parses the CRL without its
	// entries, the signature is checked over the original TBS, and the
	// entries are scanned here for their serials only.
	skeleton, entries, err := splitCRL(der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	rl, err := x509.ParseRevocationList(skeleton.der)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	rl.RawTBSRevocationList = skeleton.tbs
	issuer, err := crlIssuer(rl, cas)
	if err != nil {
		return nil, err
	}
	if err := checkComplete(rl); err != nil {
		return nil, fmt.Errorf("CRL of %s: %w", issuer.Subject, err)
	}
	revoked, err := revokedSerials(entries)
	if err != nil {
		return nil, fmt.Errorf("parse CRL: %w", err)
	}
	return &CRL{
		ThisUpdate: rl.ThisUpdate,
		NextUpdate: rl.NextUpdate,
		Number:     rl.Number,
		Issuer:     issuer,
		revoked:    revoked,
	}, nil
}

// CRL extensions that change what a CRL covers (RFC 5280 5.2).
var (
	oidDeltaCRLIndicator      = stdasn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistributionPt  = stdasn1.ObjectIdentifier{2, 5, 29, 28}
	oidFreshestCRL            = stdasn1.ObjectIdentifier{2, 5, 29, 46}
	oidAuthorityKeyIdentifier = stdasn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber              = stdasn1.ObjectIdentifier{2, 5, 29, 20}
	oidAuthorityInfoAccess    = stdasn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
)

// checkComplete refuses a CRL that is not the complete list of its CA's
// revocations: a delta CRL, a CRL with an issuing distribution point
// (whatever it restricts: only user or CA certificates, some reasons, one
// partition, or an indirect CRL), or one with an unknown critical
// extension, which RFC 5280 says must not be used.
func checkComplete(rl *x509.RevocationList) error {
	for _, ext := range rl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return fmt.Errorf("%w: a delta CRL (deltaCRLIndicator); publish the full CRL", ErrCRLScope)
		case ext.Id.Equal(oidIssuingDistributionPt):
			return fmt.Errorf("%w: its issuing distribution point limits its scope; publish one CRL covering every certificate of the CA", ErrCRLScope)
		case ext.Id.Equal(oidFreshestCRL), ext.Id.Equal(oidAuthorityKeyIdentifier),
			ext.Id.Equal(oidCRLNumber), ext.Id.Equal(oidAuthorityInfoAccess):
		case ext.Critical:
			return fmt.Errorf("%w: unknown critical extension %s", ErrCRLScope, ext.Id)
		}
	}
	return nil
}

// crlSkeleton is a CRL re-encoded without its revokedCertificates, and the
// original TBS that the signature covers.
type crlSkeleton struct {
	der []byte
	tbs []byte
}

// splitCRL separates the revokedCertificates of a DER CertificateList
// (RFC 5280 section 5.1) from the rest.
func splitCRL(der []byte) (crlSkeleton, cryptobyte.String, error) {
	var sk crlSkeleton
	input := cryptobyte.String(der)
	var certList, tbsElement cryptobyte.String
	if !input.ReadASN1(&certList, asn1.SEQUENCE) || !input.Empty() ||
		!certList.ReadASN1Element(&tbsElement, asn1.SEQUENCE) {
		return sk, nil, errors.New("malformed CertificateList")
	}
	sk.tbs = tbsElement
	var tbs cryptobyte.String
	tbsElement.ReadASN1(&tbs, asn1.SEQUENCE)
	var version, sigAlg, issuer, thisUpdate, nextUpdate, revoked cryptobyte.String
	if tbs.PeekASN1Tag(asn1.INTEGER) && !tbs.ReadASN1Element(&version, asn1.INTEGER) {
		return sk, nil, errors.New("malformed version")
	}
	var timeTag asn1.Tag
	if !tbs.ReadASN1Element(&sigAlg, asn1.SEQUENCE) ||
		!tbs.ReadASN1Element(&issuer, asn1.SEQUENCE) ||
		!tbs.ReadAnyASN1Element(&thisUpdate, &timeTag) {
		return sk, nil, errors.New("malformed tbsCertList")
	}
	if tbs.PeekASN1Tag(asn1.UTCTime) || tbs.PeekASN1Tag(asn1.GeneralizedTime) {
		tbs.ReadAnyASN1Element(&nextUpdate, &timeTag)
	}
	if tbs.PeekASN1Tag(asn1.SEQUENCE) && !tbs.ReadASN1(&revoked, asn1.SEQUENCE) {
		return sk, nil, errors.New("malformed revokedCertificates")
	}
	// Stricter than x509, which ignores bytes after the extensions: here
	// they would end up where the skeleton's parser expects the entries.
	var extensions cryptobyte.String
	extensionsTag := asn1.Tag(0).ContextSpecific().Constructed()
	if tbs.PeekASN1Tag(extensionsTag) && !tbs.ReadASN1Element(&extensions, extensionsTag) || !tbs.Empty() {
		return sk, nil, errors.New("malformed crlExtensions or trailing data in tbsCertList")
	}
	var b cryptobyte.Builder
	b.AddASN1(asn1.SEQUENCE, func(list *cryptobyte.Builder) {
		list.AddASN1(asn1.SEQUENCE, func(t *cryptobyte.Builder) {
			for _, part := range [][]byte{version, sigAlg, issuer, thisUpdate, nextUpdate, extensions} {
				t.AddBytes(part)
			}
		})
		list.AddBytes(certList) // signatureAlgorithm, signatureValue
	})
	var err error
	if sk.der, err = b.Bytes(); err != nil {
		return sk, nil, err
	}
	return sk, revoked, nil
}

// revokedSerials reads the serials of the revokedCertificates' content into
// a set keyed by serial.Bytes(). Entry extensions are not interpreted: a
// listed serial is revoked whatever its reason code.
func revokedSerials(entries cryptobyte.String) (map[string]struct{}, error) {
	count := 0
	for scan := entries; !scan.Empty(); count++ {
		if !scan.SkipASN1(asn1.SEQUENCE) {
			return nil, fmt.Errorf("malformed revoked certificate %d", count+1)
		}
	}
	revoked := make(map[string]struct{}, count)
	for i := 1; !entries.Empty(); i++ {
		var entry, serial, revocationDate cryptobyte.String
		var timeTag asn1.Tag
		entries.ReadASN1(&entry, asn1.SEQUENCE)
		if !entry.ReadASN1(&serial, asn1.INTEGER) || len(serial) == 0 ||
			!entry.ReadAnyASN1(&revocationDate, &timeTag) ||
			(timeTag != asn1.UTCTime && timeTag != asn1.GeneralizedTime) ||
			!entry.SkipOptionalASN1(asn1.SEQUENCE) || !entry.Empty() {
			return nil, fmt.Errorf("malformed revoked certificate %d", i)
		}
		revoked[serialKey(serial)] = struct{}{}
	}
	return revoked, nil
}

// serialKey turns a DER INTEGER's content into the key Revoked looks up:
// big.Int.Bytes() of the serial, i.e. the magnitude without leading zeros.
func serialKey(der []byte) string {
	if der[0]&0x80 != 0 { // negative: not allowed, but compute as x509 would
		var n big.Int
		n.SetBytes(der)
		n.Sub(&n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(der))))
		return string(n.Bytes())
	}
	for len(der) > 0 && der[0] == 0 {
		der = der[1:]
	}
	return string(der)
}

// crlIssuer finds the CA among cas that signed rl.
func crlIssuer(rl *x509.RevocationList, cas []*x509.Certificate) (*x509.Certificate, error) {
	var lastErr error
	for _, ca := range cas {
		if !bytes.Equal(ca.RawSubject, rl.RawIssuer) {
			continue
		}
		if len(rl.AuthorityKeyId) > 0 && len(ca.SubjectKeyId) > 0 && !bytes.Equal(rl.AuthorityKeyId, ca.SubjectKeyId) {
			continue
		}
		if err := rl.CheckSignatureFrom(ca); err != nil {
			lastErr = err
			continue
		}
		return ca, nil
	}
	if lastErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrCRLIssuer, lastErr)
	}
	return nil, fmt.Errorf("%w: no CA named %q", ErrCRLIssuer, rl.Issuer)
}

// Revoked reports whether the certificate with this serial is on the CRL.
// A nil CRL revokes nothing.
func (c *CRL) Revoked(serial *big.Int) bool {
	if c == nil || serial == nil {
		return false
	}
	n := (serial.BitLen() + 7) / 8
	if n > 32 {
		_, ok := c.revoked[string(serial.Bytes())]
		return ok
	}
	var buf [32]byte // no allocation for any real serial (at most 20 bytes)
	b := serial.FillBytes(buf[:])
	_, ok := c.revoked[string(b[len(b)-n:])]
	return ok
}

// RevokedSince returns the serials c revokes that old does not (all of
// them when old is nil), in no particular order: what a CRL update newly
// revokes.
func (c *CRL) RevokedSince(old *CRL) []*big.Int {
	if c == nil {
		return nil
	}
	var out []*big.Int
	for s := range c.revoked {
		if old != nil {
			if _, ok := old.revoked[s]; ok {
				continue
			}
		}
		out = append(out, new(big.Int).SetBytes([]byte(s)))
	}
	return out
}

// Len returns the number of revoked serials.
func (c *CRL) Len() int {
	if c == nil {
		return 0
	}
	return len(c.revoked)
}

// Stale reports whether now is past the CRL's NextUpdate. A stale CRL is
// still applied; the caller should log a warning and fetch a new one.
func (c *CRL) Stale(now time.Time) bool {
	return c != nil && !c.NextUpdate.IsZero() && now.After(c.NextUpdate)
}

// RefusingWhenStale returns a copy of c that makes a [Verifier] refuse
// every certificate (ErrRevoked and ErrCRLStale) while now is past its
// NextUpdate: for operators who would rather lock everyone out than
// trust revocations that may be out of date. Without it a stale CRL keeps
// being applied as it is.
func (c *CRL) RefusingWhenStale() *CRL {
	if c == nil {
		return nil
	}
	out := *c
	out.refuseStale = true
	return &out
}

// refuses reports whether c refuses every certificate at now.
func (c *CRL) refuses(now time.Time) bool {
	return c != nil && c.refuseStale && c.Stale(now)
}

// Combine returns one CRL revoking every serial any of crls revokes, for a
// Verifier trusting several CAs, each with its own CRL; nil entries are
// skipped, and nil is returned when none is left. Serials are not told
// apart by issuer: a serial one CA revoked is refused under every CA
// (fail closed; random 128-bit serials do not collide). NextUpdate is the
// earliest of theirs, so the combination is stale as soon as one is, and
// ThisUpdate is the earliest too; Number is nil (numbers of different
// CAs do not compare) and Issuer is the first CRL's.
func Combine(crls ...*CRL) *CRL {
	var parts []*CRL
	for _, c := range crls {
		if c != nil {
			parts = append(parts, c)
		}
	}
	switch len(parts) {
	case 0:
		return nil
	case 1:
		return parts[0]
	}
	size := 0
	for _, c := range parts {
		size += len(c.revoked)
	}
	out := &CRL{Issuer: parts[0].Issuer, ThisUpdate: parts[0].ThisUpdate, revoked: make(map[string]struct{}, size)}
	for _, c := range parts {
		for s := range c.revoked {
			out.revoked[s] = struct{}{}
		}
		if c.ThisUpdate.Before(out.ThisUpdate) {
			out.ThisUpdate = c.ThisUpdate
		}
		if !c.NextUpdate.IsZero() && (out.NextUpdate.IsZero() || c.NextUpdate.Before(out.NextUpdate)) {
			out.NextUpdate = c.NextUpdate
		}
		out.refuseStale = out.refuseStale || c.refuseStale
	}
	return out
}

// ErrCRLUpdate is returned (wrapped) by [CheckCRLUpdate] when a fetched
// CRL may not replace the one a CRL source holds.
var ErrCRLUpdate = errors.New("CRL refused for this source")

// CheckCRLUpdate reports whether fetched may replace held, the CRL a CRL
// source (a file and its URL) holds now; held is nil on a first fetch,
// when the source holds none. A source belongs to one CA, the issuer of
// the CRL it holds: a CRL signed by another CA, even a trusted one, would
// drop the first CA's revocations, so it is refused, with an error naming
// both. An older CRL of the same CA (by CRL number when both have one,
// else by thisUpdate; numbers of different CAs are never compared) would
// un-revoke, and is refused too. On a first fetch there is nothing to
// compare with, so a CRL already past its nextUpdate (an old one replayed
// by an attacker on a plain http:// path, or a stale mirror) is refused.
func CheckCRLUpdate(fetched, held *CRL, now time.Time) error {
	if held == nil {
		if !fetched.NextUpdate.IsZero() && now.After(fetched.NextUpdate) {
			return fmt.Errorf("%w: a first fetch of %s's CRL whose next update %s has passed (this update %s): a newer one should exist",
				ErrCRLUpdate, CAName(fetched.Issuer), fetched.NextUpdate.UTC().Format(time.RFC3339), fetched.ThisUpdate.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if !SameCA(fetched.Issuer, held.Issuer) {
		return fmt.Errorf("%w: signed by %s, but the source holds the CRL of %s (each CRL source belongs to one CA)",
			ErrCRLUpdate, CAName(fetched.Issuer), CAName(held.Issuer))
	}
	older := fetched.ThisUpdate.Before(held.ThisUpdate)
	if fetched.Number != nil && held.Number != nil {
		older = fetched.Number.Cmp(held.Number) < 0
	}
	if older {
		return fmt.Errorf("%w: %s's CRL number %v (this update %s) is older than the held one's %v (%s)",
			ErrCRLUpdate, CAName(fetched.Issuer), fetched.Number, fetched.ThisUpdate.UTC().Format(time.RFC3339), held.Number, held.ThisUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// SameCA reports whether a and b are the same CA: the same subject and
// the same key (a CA certificate renewed with its key is the same CA).
func SameCA(a, b *x509.Certificate) bool {
	return a != nil && b != nil && bytes.Equal(a.RawSubject, b.RawSubject) && bytes.Equal(a.RawSubjectPublicKeyInfo, b.RawSubjectPublicKeyInfo)
}

// CAName names a CA for a message: its subject and a short hash of its
// key, which tells apart CAs that share a subject.
func CAName(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return fmt.Sprintf("%s (key %x)", ca.Subject, sum[:4])
}
