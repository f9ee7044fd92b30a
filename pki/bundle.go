package pki

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"software.sslmate.com/src/go-pkcs12"
)

// ErrPassword is returned (wrapped) when a PKCS#12 bundle's password is wrong.
var ErrPassword = errors.New("wrong bundle password")

// Bundle is the content of a PKCS#12 file: a P-256 private key, its
// certificate and the CA certificates shipped with it.
type Bundle struct {
	// Key is the holder's P-256 private key.
	Key *ecdsa.PrivateKey
	// Cert is the holder's certificate, the one matching Key.
	Cert *x509.Certificate
	// CAs are the other certificates in the bundle: the issuing CA.
	CAs []*x509.Certificate
}

// LoadBundle reads and decodes the PKCS#12 file at path. Errors name the file.
func LoadBundle(path, password string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", path, err)
	}
	b, err := DecodeBundle(data, password)
	if err != nil {
		return nil, fmt.Errorf("load bundle %s: %w", path, err)
	}
	return b, nil
}

// DecodeBundle decodes a PKCS#12 bundle, legacy (RC2-40 or 3DES, SHA-1 MAC)
// or modern (PBES2 with AES). The key must be P-256 ECDSA and belong to the
// certificate.
func DecodeBundle(data []byte, password string) (*Bundle, error) {
	key, cert, cas, err := pkcs12.DecodeChain(data, password)
	if err != nil {
		if errors.Is(err, pkcs12.ErrIncorrectPassword) || errors.Is(err, pkcs12.ErrDecryption) {
			return nil, fmt.Errorf("%w: %w", ErrPassword, err)
		}
		return nil, fmt.Errorf("decode PKCS#12: %w", err)
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("private key is %T, want P-256 ECDSA", key)
	}
	if ecKey.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key is ECDSA on %s, want P-256", ecKey.Curve.Params().Name)
	}
	if !ecKey.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("private key does not match the certificate")
	}
	return &Bundle{Key: ecKey, Cert: cert, CAs: cas}, nil
}

// ECDHKey returns the bundle's key for ECDH, which is how the server
// decrypts knocks sealed to its certificate.
func (b *Bundle) ECDHKey() (*ecdh.PrivateKey, error) {
	k, err := b.Key.ECDH()
	if err != nil {
		return nil, fmt.Errorf("convert bundle key to ECDH: %w", err)
	}
	return k, nil
}

// LoadCertificates reads a file holding either one or more PEM
// "CERTIFICATE" blocks or a single DER certificate.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load certificates %s: %w", path, err)
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("load certificates %s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificates parses one or more PEM "CERTIFICATE" blocks or a single
// DER certificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	ders, err := certificateDERs(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for i, der := range ders {
		cert, err := x509.ParseCertificate(der)
		switch {
		case err != nil && !isPEM(data):
			return nil, fmt.Errorf("parse DER certificate: %w", err)
		case err != nil:
			return nil, fmt.Errorf("parse PEM certificate %d: %w", i+1, err)
		}
		certs = append(certs, cert)
	}
	return certs, nil
}

// certificateDERs returns the DER of every PEM "CERTIFICATE" block in
// data, or data itself when it is not PEM, without parsing them.
func certificateDERs(data []byte) ([][]byte, error) {
	if !isPEM(data) {
		return [][]byte{data}, nil
	}
	var ders [][]byte
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "CERTIFICATE" {
			ders = append(ders, block.Bytes)
		}
	}
	if len(ders) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return ders, nil
}

// isPEM reports whether data looks like PEM text rather than DER.
func isPEM(data []byte) bool {
	return bytes.Contains(data, []byte("-----BEGIN "))
}
