package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"sknock/internal/testenv"
)

const vectorPassword = "portknocking"

// vectorTime is when the vector certificates are valid. The vector knocks'
// own timestamp (2026-01-01) is before the certificates' notBefore.
var vectorTime = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

// vectorKnockTime is the timestamp the vector knocks carry.
var vectorKnockTime = time.Unix(1767225600, 0)

// vector is the path of the interop vector file name, in the directory
// testenv.FindVectors finds. When there is none, the path names
// missingVectors, so a test that opens it fails saying why.
func vector(name string) string {
	dir, err := testenv.FindVectors()
	if err != nil {
		return filepath.Join(missingVectors, name)
	}
	return filepath.Join(dir, name)
}

// missingVectors stands for the vectors directory when none was found.
const missingVectors = "/nonexistent/interop-vectors-not-found-set-SKNOCK_VECTORS"

// testCA is an in-memory CA for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var testEpoch = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func newTestCA(t testing.TB, cn string, mutate func(*x509.Certificate)) *testCA {
	t.Helper()
	key := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             testEpoch.Add(-24 * time.Hour),
		NotAfter:              testEpoch.Add(365 * 24 * time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if mutate != nil {
		mutate(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key}
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// clientTemplate is a client certificate like the vectors' ones.
func clientTemplate(t testing.TB, serial int64, allow string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "client"},
		NotBefore:             testEpoch.Add(-time.Hour),
		NotAfter:              testEpoch.Add(30 * 24 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if allow != "" {
		a, err := ParseAuthorization(allow)
		if err != nil {
			t.Fatal(err)
		}
		san, err := MarshalAuthorizationSAN(a)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{san}
	}
	return tmpl
}

// issue signs tmpl for pub (a new P-256 key if nil) and returns the DER.
func (ca *testCA) issue(t testing.TB, tmpl *x509.Certificate, pub any) []byte {
	t.Helper()
	if pub == nil {
		pub = &mustKey(t).PublicKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// crl signs a CRL revoking serials.
func (ca *testCA) crl(t testing.TB, number int64, serials ...*big.Int) []byte {
	t.Helper()
	entries := make([]x509.RevocationListEntry, len(serials))
	for i, s := range serials {
		entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: testEpoch}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                testEpoch.Add(-time.Hour),
		NextUpdate:                testEpoch.Add(24 * time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func genP384(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// rawAuthzSAN is a SAN extension with the authorisation otherName holding
// text as is, valid or not.
func rawAuthzSAN(text string) pkix.Extension {
	return pkix.Extension{Id: oidSubjectAltName, Value: marshalAuthorizationText(text)}
}
