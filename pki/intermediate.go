package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// InitIntermediate creates an intermediate CA in dir (created if
// missing), issued by the CA in parentDir: a P-256 key in DIR/ca.key and
// DIR/ca.pem holding its certificate (CN "sknock CA NAME") followed by
// the parent's ca.pem, so that one file gives a gatekeeper's server.ca
// the whole chain. It is valid for days (zero: DefaultCADays), cut to the
// parent's validity, and recorded in the parent's index as NAME, kind
// "ca": `sknock pki revoke --dir PARENT --name NAME` and a new CRL of the
// parent revoke it, and with it every certificate it issued. dir then
// works like any CA directory (server, client, revoke, crl).
func InitIntermediate(dir, parentDir, name string, validDays int) error {
	if err := initIntermediate(dir, parentDir, name, validDays); err != nil {
		return fmt.Errorf("init intermediate CA %s in %s under %s: %w", name, dir, parentDir, err)
	}
	return nil
}

func initIntermediate(dir, parentDir, name string, validDays int) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	validity, err := days(validDays, DefaultCADays)
	if err != nil {
		return err
	}
	for _, f := range []string{CAKeyFile, CACertFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, f), ErrExists)
		}
	}
	parent, parentKey, err := loadCA(parentDir)
	if err != nil {
		return err
	}
	chain, err := os.ReadFile(filepath.Join(parentDir, CACertFile))
	if err != nil {
		return err
	}
	idx, err := loadIndex(parentDir)
	if err != nil {
		return err
	}
	if idx.find(name) != nil {
		return fmt.Errorf("name %s in %s's %s: %w", name, parentDir, IndexFile, ErrExists)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sknock CA " + name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if tmpl.NotAfter.After(parent.NotAfter) {
		tmpl.NotAfter = parent.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if err := createFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := createFile(filepath.Join(dir, CACertFile), append(pemCert(der), chain...), 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	idx.Certificates = append(idx.Certificates, indexEntry{Name: name, Kind: "ca", Serial: serial.String(), NotAfter: tmpl.NotAfter.UTC()})
	return idx.save(parentDir)
}
