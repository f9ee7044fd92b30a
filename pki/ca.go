package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Files of the CA directory.
const (
	CAKeyFile   = "ca.key"       // CA private key, PEM PKCS#8, mode 0600
	CACertFile  = "ca.pem"       // CA certificate, PEM
	CRLFile     = "ca.crl"       // current CRL, DER
	IndexFile   = "index.json"   // issued certificates: name, kind, serial
	RevokedFile = "revoked.json" // revoked serials and the last CRL number
)

// Defaults for a zero number of days.
const (
	DefaultCADays   = 3650
	DefaultCertDays = 365
	DefaultCRLDays  = 30
)

// MaxDays bounds every validity given in days (CA, certificate, CRL):
// 100 years. A time.Duration holds 292 years, and a longer validity
// would wrap into a date in the past.
const MaxDays = 36500

// backdate is subtracted from notBefore so that a certificate issued on one
// host is already valid on another whose clock is a little behind.
const backdate = time.Hour

// ErrExists is returned (wrapped) when issuing would overwrite a file or
// reuse a name.
var ErrExists = errors.New("already exists")

// ErrDays is returned (wrapped) for a number of days below zero or above
// MaxDays.
var ErrDays = errors.New("number of days out of range")

// days converts a number of days, zero meaning def, to a duration. It
// refuses what is negative or above MaxDays, rather than let the end of
// the validity wrap around.
func days(n, def int) (time.Duration, error) {
	if n < 0 || n > MaxDays {
		return 0, fmt.Errorf("%w: %d, want 1 to %d (0: the default)", ErrDays, n, MaxDays)
	}
	if n == 0 {
		n = def
	}
	return time.Duration(n) * 24 * time.Hour, nil
}

// InitCA creates a new CA in dir (created if missing): a P-256 key in
// DIR/ca.key and a self-signed certificate in DIR/ca.pem valid for days
// (zero: DefaultCADays; below zero or above MaxDays: ErrDays). It refuses
// to touch an existing CA.
func InitCA(dir string, validDays int) error {
	if err := initCA(dir, validDays); err != nil {
		return fmt.Errorf("init CA in %s: %w", dir, err)
	}
	return nil
}

func initCA(dir string, validDays int) error {
	validity, err := days(validDays, DefaultCADays)
	if err != nil {
		return err
	}
	if err := refuseExistingCA(dir); err != nil {
		return err
	}
	_, err = writeCA(dir, "sknock CA", validity, nil, nil, nil)
	return err
}

// refuseExistingCA fails with ErrExists when dir holds a CA key or
// certificate already.
func refuseExistingCA(dir string) error {
	for _, f := range []string{CAKeyFile, CACertFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, f), ErrExists)
		}
	}
	return nil
}

// writeCA makes a CA key and certificate named commonName, valid for
// validity (not past the parent's end), and writes them to dir as
// CAKeyFile and CACertFile, the certificate followed by chain. Without a
// parent the certificate is self-signed (a root). It returns the
// certificate.
func writeCA(dir, commonName string, validity time.Duration, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, chain []byte) (*x509.Certificate, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	} else if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if err := createFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := createFile(filepath.Join(dir, CACertFile), append(pemCert(der), chain...), 0o644); err != nil {
		os.Remove(keyPath)
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// loadCA reads DIR/ca.pem and DIR/ca.key.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, fmt.Errorf("load CA key %s: no PEM block", keyPath)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load CA key %s: %w", keyPath, err)
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ecKey.PublicKey.Equal(certs[0].PublicKey) {
		return nil, nil, fmt.Errorf("load CA key %s: not the ECDSA key of %s", keyPath, CACertFile)
	}
	return certs[0], ecKey, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyID is the RFC 5280 method 1 key identifier: SHA-1 of the public key bit
// string.
func keyID(pub *ecdsa.PublicKey) []byte {
	point, err := pub.Bytes()
	if err != nil {
		return nil
	}
	sum := sha1.Sum(point)
	return sum[:]
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
