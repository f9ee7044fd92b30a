package pki

import (
	"fmt"
	"os"
	"path/filepath"
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
	if err := refuseExistingCA(dir); err != nil {
		return err
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
	cert, err := writeCA(dir, "sknock CA "+name, validity, parent, parentKey, chain)
	if err != nil {
		return err
	}
	idx.Certificates = append(idx.Certificates, indexEntry{Name: name, Kind: "ca", Serial: cert.SerialNumber.String(), NotAfter: cert.NotAfter.UTC()})
	return idx.save(parentDir)
}
