package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"sknock/knock/client"
	"sknock/pki"
)

var oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}

// dirNameAKI is an authority key identifier as the original project's
// OpenSSL CA wrote it (authorityKeyIdentifier=issuer:always): the issuer's
// name and serial, and no keyIdentifier.
func dirNameAKI(t *testing.T, issuer *x509.Certificate) pkix.Extension {
	t.Helper()
	// GeneralName directoryName is [4] EXPLICIT Name; GeneralNames is
	// [1] IMPLICIT SEQUENCE OF GeneralName; the serial is [2] IMPLICIT.
	dirName, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: issuer.RawSubject})
	if err != nil {
		t.Fatal(err)
	}
	value, err := asn1.Marshal(struct {
		Issuer asn1.RawValue
		Serial *big.Int `asn1:"tag:2"`
	}{
		Issuer: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: dirName},
		Serial: issuer.SerialNumber,
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidAuthorityKeyID, Value: value}
}

// issueLegacy issues a certificate from ca with a DirName AKI and writes it
// with its key as a legacy (RC2-40, 3DES, SHA-1) PKCS#12 bundle and as PEM.
func issueLegacy(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial int64, eku x509.ExtKeyUsage, allow string) (pfxPath, pemPath string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:    big.NewInt(serial),
		Subject:         pkix.Name{CommonName: name, Organization: []string{"Legacy CA"}},
		NotBefore:       time.Now().Add(-time.Hour),
		NotAfter:        time.Now().Add(24 * time.Hour),
		KeyUsage:        x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:     []x509.ExtKeyUsage{eku},
		ExtraExtensions: []pkix.Extension{dirNameAKI(t, ca)},
	}
	if allow != "" {
		a, err := pki.ParseAllow(allow)
		if err != nil {
			t.Fatal(err)
		}
		san, err := pki.MarshalAuthorizationSAN(a)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, san)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.AuthorityKeyId) != 0 {
		t.Fatalf("%s: AKI has a keyIdentifier, want DirName and serial only", name)
	}
	pfx, err := pkcs12.LegacyRC2.Encode(key, cert, []*x509.Certificate{ca}, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	pfxPath, pemPath = filepath.Join(dir, name+".pfx"), filepath.Join(dir, name+".pem")
	if err := os.WriteFile(pfxPath, pfx, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return pfxPath, pemPath
}

// TestLegacyOpenSSLBundle knocks with a bundle shaped like the original
// project's: legacy PKCS#12 and a certificate whose AKI names the CA by
// DirName and serial. The gatekeeper must grant it.
func TestLegacyOpenSSLBundle(t *testing.T) {
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sKnock CA", Organization: []string{"Legacy CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	serverPFX, serverPEM := issueLegacy(t, dir, "gatekeeper", ca, caKey, 16, x509.ExtKeyUsageServerAuth, "")
	clientPFX, _ := issueLegacy(t, dir, "client-a", ca, caKey, 17, x509.ExtKeyUsageClientAuth, "tcp/2000,udp/8000")

	trust := loadTrust(t, serverPFX)
	g := newFakeGate(t, trust, time.Now, 1)
	c, err := client.Load(clientPFX, testPassword, serverPEM, &client.Config{KnockPort: g.port(), Dial: g.Dial})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...); err != nil {
		t.Fatalf("Knock: %v", err)
	}
	d := g.waitDecisions(1)[0]
	if !d.Granted() {
		t.Fatalf("verdict %s: %v: %v", d.Verdict(), d.Reason, d.Err)
	}
	if got, want := d.Client.Serial.Int64(), int64(17); got != want {
		t.Errorf("granted serial %d, want %d", got, want)
	}
}
