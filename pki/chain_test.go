package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"
)

// chainCert is a certificate made for the chain tests and its key.
type chainCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var chainNow = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// makeChainCert issues a certificate named cn by parent (nil: self-signed)
// after edit changed its template.
func makeChainCert(t *testing.T, cn string, serial int64, parent *chainCert, edit func(*x509.Certificate)) *chainCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             chainNow.Add(-time.Hour),
		NotAfter:              chainNow.Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if edit != nil {
		edit(tmpl)
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &chainCert{cert: cert, key: key}
}

// leafTemplate makes a template a client certificate.
func leafTemplate(c *x509.Certificate) {
	c.IsCA = false
	c.KeyUsage = x509.KeyUsageDigitalSignature
	c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} // not checked in v2
}

func ders(cs ...*chainCert) [][]byte {
	out := make([][]byte, len(cs))
	for i, c := range cs {
		out[i] = c.cert.Raw
	}
	return out
}

func TestVerifyChain(t *testing.T) {
	root := makeChainCert(t, "root", 1, nil, nil)
	inter := makeChainCert(t, "inter", 2, root, func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 0, true })
	underZero := makeChainCert(t, "under pathLen 0", 3, inter, nil)
	noCertSign := makeChainCert(t, "no keyCertSign", 4, root, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign })
	notCA := makeChainCert(t, "not a CA", 5, root, leafTemplate)
	revokedInter := makeChainCert(t, "revoked inter", 6, root, nil)
	expiredInter := makeChainCert(t, "expired inter", 7, root, func(c *x509.Certificate) { c.NotAfter = chainNow.Add(-time.Minute) })
	otherRoot := makeChainCert(t, "other root", 8, nil, nil)
	leafOf := func(parent *chainCert, serial int64) *chainCert {
		return makeChainCert(t, "client", serial, parent, leafTemplate)
	}
	crl := &CRL{revoked: map[string]struct{}{string(big.NewInt(6).Bytes()): {}, string(big.NewInt(66).Bytes()): {}}}
	v := NewVerifier([]*x509.Certificate{root.cert}, crl)
	tests := []struct {
		name  string
		chain [][]byte
		want  error
	}{
		{"leaf of the root", ders(leafOf(root, 10)), nil},
		{"leaf, intermediate", ders(leafOf(inter, 11), inter), nil},
		{"leaf, intermediate, root", ders(leafOf(inter, 12), inter, root), nil},
		{"pathLen 0 exceeded", ders(leafOf(underZero, 13), underZero, inter), ErrUntrusted},
		{"intermediate without keyCertSign", ders(leafOf(noCertSign, 14), noCertSign), ErrUntrusted},
		{"a client certificate as issuer", ders(leafOf(notCA, 15), notCA), ErrUntrusted},
		{"revoked intermediate", ders(leafOf(revokedInter, 16), revokedInter), ErrRevoked},
		{"expired intermediate", ders(leafOf(expiredInter, 17), expiredInter), ErrExpired},
		{"revoked leaf", ders(leafOf(root, 66)), ErrRevoked},
		{"another root", ders(leafOf(otherRoot, 18)), ErrUntrusted},
		{"another root sent along", ders(leafOf(otherRoot, 19), otherRoot), ErrUntrusted},
		{"intermediate missing", ders(leafOf(inter, 20)), ErrUntrusted},
		{"out of order", ders(inter, leafOf(inter, 21)), ErrUsage},
		{"a CA as the client", ders(inter), ErrUsage},
		{"garbage", [][]byte{{0x30, 0}}, ErrMalformedCertificate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, err := v.VerifyChain(tt.chain, chainNow)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyChain: %v", err)
				}
				if client.Subject != "CN=client" {
					t.Errorf("subject %q", client.Subject)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("VerifyChain = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestVerifyChainConfiguredIntermediate: a configured intermediate takes
// the path on to its root, and the root's CRL revoking it refuses.
func TestVerifyChainConfiguredIntermediate(t *testing.T) {
	root := makeChainCert(t, "root", 1, nil, nil)
	inter := makeChainCert(t, "inter", 2, root, nil)
	leaf := makeChainCert(t, "client", 10, inter, leafTemplate)
	v := NewVerifier([]*x509.Certificate{root.cert, inter.cert}, nil)
	if _, err := v.VerifyChain(ders(leaf), chainNow); err != nil {
		t.Errorf("leaf of a configured intermediate: %v", err)
	}
	revoking := NewVerifier([]*x509.Certificate{root.cert, inter.cert}, &CRL{revoked: map[string]struct{}{string(big.NewInt(2).Bytes()): {}}})
	if _, err := revoking.VerifyChain(ders(leaf), chainNow); !errors.Is(err, ErrRevoked) {
		t.Errorf("configured intermediate revoked: %v, want ErrRevoked", err)
	}
	if _, err := v.VerifyChain(ders(leaf), chainNow.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("after the validity: %v, want ErrExpired", err)
	}
}
