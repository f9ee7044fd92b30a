package pki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"sknock/packet"
	"sync"
	"testing"
	"time"
)

func vectorVerifier(t testing.TB) *Verifier {
	t.Helper()
	cas, err := LoadCertificates(vector("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := LoadCRL(vector("ca.crl"), cas)
	if err != nil {
		t.Fatal(err)
	}
	return NewVerifier(cas, crl)
}

func vectorCertDER(t testing.TB, name string) []byte {
	t.Helper()
	b, err := LoadBundle(vector(name+".pfx"), vectorPassword)
	if err != nil {
		t.Fatal(err)
	}
	return b.Cert.Raw
}

func TestVerifyVectors(t *testing.T) {
	v := vectorVerifier(t)
	tests := []struct {
		name       string
		give       string
		at         time.Time
		wantErr    error
		wantAuthz  string
		wantFound  bool
		wantSerial int64
	}{
		{name: "a", give: "client-a", at: vectorTime, wantAuthz: "1.2000,1.3000,0.8000", wantFound: true, wantSerial: 17},
		{name: "b", give: "client-b", at: vectorTime, wantAuthz: "1.22", wantFound: true, wantSerial: 18},
		{name: "noauth", give: "client-noauth", at: vectorTime, wantSerial: 20},
		{name: "revoked", give: "client-revoked", at: vectorTime, wantErr: ErrRevoked},
		{name: "rogue", give: "client-rogue", at: vectorTime, wantErr: ErrUntrusted},
		{name: "server cert is not a client", give: "server", at: vectorTime, wantErr: ErrUsage},
		// The vector knocks carry 2026-01-01, before the certificates'
		// notBefore (2026-11-25): at the knock's own time they are not valid.
		{name: "a at knock timestamp", give: "client-a", at: vectorKnockTime, wantErr: ErrNotYetValid},
		{name: "a expired", give: "client-a", at: time.Date(2037, 1, 1, 0, 0, 0, 0, time.UTC), wantErr: ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(vectorCertDER(t, tt.give), tt.at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Authorization.String(); got != tt.wantAuthz || c.HasAuthorization != tt.wantFound {
				t.Errorf("authorization %q found %v, want %q %v", got, c.HasAuthorization, tt.wantAuthz, tt.wantFound)
			}
			if c.Serial.Int64() != tt.wantSerial {
				t.Errorf("serial %s, want %d", c.Serial, tt.wantSerial)
			}
			if c.PublicKey == nil || c.Subject == "" {
				t.Errorf("incomplete client %+v", c)
			}
		})
	}
}

func TestVerifyVectorDERFiles(t *testing.T) {
	v := vectorVerifier(t)
	der, err := os.ReadFile(vector("client-a.der"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(der, vectorTime)
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "CN=client-a,O=Vector Test" {
		t.Errorf("subject %q", c.Subject)
	}
}

func TestVerify(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	other := newTestCA(t, "Test CA", nil) // same name, other key
	revokedSerial := big.NewInt(66)
	crl, err := ParseCRL(ca.crl(t, 1, revokedSerial), []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier([]*x509.Certificate{ca.cert}, crl)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(f func(*x509.Certificate)) *x509.Certificate {
		tmpl := clientTemplate(t, 7, "1.22")
		f(tmpl)
		return tmpl
	}
	tests := []struct {
		name    string
		give    []byte
		at      time.Time
		wantErr error
	}{
		{name: "ok", give: ca.issue(t, clientTemplate(t, 7, "1.22"), nil)},
		{name: "no EKU no KU", give: ca.issue(t, mod(func(c *x509.Certificate) { c.ExtKeyUsage = nil; c.KeyUsage = 0 }), nil)},
		{name: "garbage", give: []byte{0x30, 0x03, 0x02, 0x01, 0x01}, wantErr: ErrMalformedCertificate},
		{name: "empty", give: nil, wantErr: ErrMalformedCertificate},
		{name: "other CA same name", give: other.issue(t, clientTemplate(t, 7, "1.22"), nil), wantErr: ErrUntrusted},
		{name: "revoked", give: ca.issue(t, clientTemplate(t, 66, "1.22"), nil), wantErr: ErrRevoked},
		{name: "rsa", give: ca.issue(t, clientTemplate(t, 8, "1.22"), &rsaKey.PublicKey), wantErr: ErrKeyType},
		{name: "P-384", give: ca.issue(t, clientTemplate(t, 8, "1.22"), &genP384(t).PublicKey), wantErr: ErrKeyType},
		{name: "is CA", give: ca.issue(t, mod(func(c *x509.Certificate) { c.IsCA = true }), nil), wantErr: ErrUsage},
		{name: "KU without digitalSignature", give: ca.issue(t, mod(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyAgreement }), nil), wantErr: ErrUsage},
		{name: "EKU serverAuth only", give: ca.issue(t, mod(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), nil), wantErr: ErrUsage},
		{name: "not yet valid", give: ca.issue(t, clientTemplate(t, 7, "1.22"), nil), at: testEpoch.Add(-2 * time.Hour), wantErr: ErrNotYetValid},
		{name: "expired", give: ca.issue(t, clientTemplate(t, 7, "1.22"), nil), at: testEpoch.Add(31 * 24 * time.Hour), wantErr: ErrExpired},
		{name: "outlives CA", give: ca.issue(t, mod(func(c *x509.Certificate) { c.NotAfter = testEpoch.Add(400 * 24 * time.Hour) }), nil), at: testEpoch.Add(370 * 24 * time.Hour), wantErr: ErrExpired},
		{name: "bad authorization", give: ca.issue(t, mod(func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{rawAuthzSAN("1.0")}
		}), nil), wantErr: ErrMalformedCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := tt.at
			if at.IsZero() {
				at = testEpoch
			}
			// Twice: the second call may come from the cache and must agree.
			for range 2 {
				_, err := v.Verify(tt.give, at)
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
			}
		})
	}
}

// TestVerifyCacheTimeWindow checks that a cached certificate is still
// refused outside its validity window, and that a CA's window counts.
func TestVerifyCacheTimeWindow(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	tmpl := clientTemplate(t, 7, "1.22")
	tmpl.NotAfter = testEpoch.Add(400 * 24 * time.Hour) // outlives the CA
	der := ca.issue(t, tmpl, nil)
	v := NewVerifier([]*x509.Certificate{ca.cert}, nil)
	steps := []struct {
		at      time.Time
		wantErr error
	}{
		{at: testEpoch},
		{at: testEpoch.Add(-2 * time.Hour), wantErr: ErrNotYetValid},
		{at: testEpoch.Add(370 * 24 * time.Hour), wantErr: ErrExpired},
		{at: testEpoch.Add(time.Hour)},
	}
	for i, s := range steps {
		if _, err := v.Verify(der, s.at); !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d: got %v, want %v", i, err, s.wantErr)
		}
	}
	if got := v.cache.size.Load(); got != 1 {
		t.Errorf("cache size %d, want 1", got)
	}
}

func TestVerifyCacheBound(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	v := NewVerifier([]*x509.Certificate{ca.cert}, nil)
	v.cache.size.Store(MaxCachedCertificates - 1)
	for i := range 3 {
		if _, err := v.Verify(ca.issue(t, clientTemplate(t, int64(10+i), "1.22"), nil), testEpoch); err != nil {
			t.Fatal(err)
		}
	}
	if got := v.cache.size.Load(); got != MaxCachedCertificates {
		t.Errorf("cache size %d, want %d", got, MaxCachedCertificates)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	v := NewVerifier([]*x509.Certificate{ca.cert}, nil)
	der := ca.issue(t, clientTemplate(t, 7, "1.22"), nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(der, testEpoch); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestVerifyDirNameAKI issues a certificate whose authority key identifier
// names the CA by issuer name and serial, without a keyIdentifier, as the
// original project's OpenSSL CA may write it: chain building must still
// find the CA (by name).
func TestVerifyDirNameAKI(t *testing.T) {
	for _, caHasSKI := range []bool{true, false} {
		name := map[bool]string{true: "CA with SKI", false: "CA without SKI"}[caHasSKI]
		t.Run(name, func(t *testing.T) {
			ca := newTestCA(t, "OpenSSL CA", func(c *x509.Certificate) {
				if !caHasSKI {
					c.SubjectKeyId = nil
				}
			})
			if !caHasSKI && len(ca.cert.SubjectKeyId) > 0 {
				t.Log("x509 generated an SKI for the CA anyway")
			}
			tmpl := clientTemplate(t, 7, "1.2000")
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, dirNameAKI(t, ca.cert))
			der := ca.issue(t, tmpl, nil)
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if len(cert.AuthorityKeyId) != 0 {
				t.Fatalf("test certificate has keyIdentifier %x", cert.AuthorityKeyId)
			}
			c, err := NewVerifier([]*x509.Certificate{ca.cert}, nil).Verify(der, testEpoch)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Authorization.Allows(packet.TCP, 2000) {
				t.Errorf("authorization %s", c.Authorization)
			}
		})
	}
}

// dirNameAKI builds AuthorityKeyIdentifier { [1] authorityCertIssuer
// { directoryName ca.Subject }, [2] authorityCertSerialNumber }.
func dirNameAKI(t testing.TB, ca *x509.Certificate) pkix.Extension {
	t.Helper()
	dirName, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: ca.RawSubject})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: dirName})
	if err != nil {
		t.Fatal(err)
	}
	serialDER, err := asn1.Marshal(ca.SerialNumber)
	if err != nil {
		t.Fatal(err)
	}
	// Re-tag the INTEGER as [2] IMPLICIT: same content, new tag byte.
	serialDER[0] = 0x82
	value, err := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSequence, IsCompound: true, Bytes: append(issuer, serialDER...)})
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 35}, Value: value}
}

func BenchmarkVerifyCold(b *testing.B) {
	v := vectorVerifier(b)
	der := vectorCertDER(b, "client-a")
	b.ReportAllocs()
	for b.Loop() {
		v.cache = verifiedCache{}
		if _, err := v.Verify(der, vectorTime); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	v := vectorVerifier(b)
	der := vectorCertDER(b, "client-a")
	if _, err := v.Verify(der, vectorTime); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(der, vectorTime); err != nil {
			b.Fatal(err)
		}
	}
}
