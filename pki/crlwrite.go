package pki

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"path/filepath"
	"time"
)

// WriteCRL writes DIR/ca.crl (DER), signed by the CA, listing every revoked
// serial, with the next CRL number and a nextUpdate days from now (zero:
// DefaultCRLDays).
func WriteCRL(dir string, validDays int) error {
	if err := writeCRL(dir, validDays); err != nil {
		return fmt.Errorf("write CRL in %s: %w", dir, err)
	}
	return nil
}

// WriteCRLUntil is WriteCRL with the nextUpdate given as a time, which
// must be after now and at most MaxDays ahead.
func WriteCRLUntil(dir string, next time.Time) error {
	now := time.Now()
	if !next.After(now) || next.Sub(now) > time.Duration(MaxDays)*24*time.Hour {
		return fmt.Errorf("write CRL in %s: %w: next update %s is not in the next %d days", dir, ErrDays, next.UTC().Format(time.RFC3339), MaxDays)
	}
	if err := writeCRLUntil(dir, next); err != nil {
		return fmt.Errorf("write CRL in %s: %w", dir, err)
	}
	return nil
}

func writeCRL(dir string, validDays int) error {
	validity, err := days(validDays, DefaultCRLDays)
	if err != nil {
		return err
	}
	return writeCRLUntil(dir, time.Now().Add(validity))
}

func writeCRLUntil(dir string, next time.Time) error {
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	rev, err := loadRevoked(dir)
	if err != nil {
		return err
	}
	entries := make([]x509.RevocationListEntry, 0, len(rev.Revoked))
	for _, r := range rev.Revoked {
		serial, ok := new(big.Int).SetString(r.Serial, 10)
		if !ok {
			return fmt.Errorf("%s: bad serial %q", RevokedFile, r.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: r.RevokedAt})
	}
	// The number is saved before the CRL is written: a failure in between
	// skips a number, which is allowed, but never reuses one.
	rev.CRLNumber++
	if err := rev.save(dir); err != nil {
		return err
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(rev.CRLNumber),
		ThisUpdate:                now,
		NextUpdate:                next,
		RevokedCertificateEntries: entries,
	}, ca, caKey)
	if err != nil {
		return fmt.Errorf("create CRL: %w", err)
	}
	return WriteFileAtomic(filepath.Join(dir, CRLFile), der, 0o644)
}
