package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// LoadCertificateDER reads the first certificate of a file in the forms
// LoadCertificates reads (PEM blocks, or one DER certificate) and returns
// its DER without parsing it.
func LoadCertificateDER(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", path, err)
	}
	ders, err := certificateDERs(data)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", path, err)
	}
	return ders[0], nil
}

// CertificatePublicKey returns the subject public key of the DER
// certificate der, reading only the fields before it. It checks nothing
// else, the signature included: it is for a holder that trusts the
// certificate as given, such as a client reading the gatekeeper's
// certificate or its own from the key cache. It spares such a short-lived
// process x509.ParseCertificate's full parse, about 0.2 ms of a cold start.
func CertificatePublicKey(der []byte) (crypto.PublicKey, error) {
	input := cryptobyte.String(der)
	var cert, tbs, spki cryptobyte.String
	if !input.ReadASN1(&cert, asn1.SEQUENCE) || !input.Empty() ||
		!cert.ReadASN1(&tbs, asn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(asn1.Tag(0).Constructed().ContextSpecific()) || // version
		!tbs.SkipASN1(asn1.INTEGER) || // serialNumber
		!tbs.SkipASN1(asn1.SEQUENCE) || // signature algorithm
		!tbs.SkipASN1(asn1.SEQUENCE) || // issuer
		!tbs.SkipASN1(asn1.SEQUENCE) || // validity
		!tbs.SkipASN1(asn1.SEQUENCE) || // subject
		!tbs.ReadASN1Element(&spki, asn1.SEQUENCE) {
		return nil, errors.New("certificate public key: malformed certificate")
	}
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("certificate public key: %w", err)
	}
	return pub, nil
}
