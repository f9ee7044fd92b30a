package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestLoadCRLVector(t *testing.T) {
	cas, err := LoadCertificates(vector("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	crl, err := LoadCRL(vector("ca.crl"), cas)
	if err != nil {
		t.Fatal(err)
	}
	if crl.Len() != 1 || !crl.Revoked(big.NewInt(19)) || crl.Revoked(big.NewInt(17)) {
		t.Errorf("CRL has %d entries, revoked(19)=%v revoked(17)=%v", crl.Len(), crl.Revoked(big.NewInt(19)), crl.Revoked(big.NewInt(17)))
	}
	if crl.Number.Int64() != 1 {
		t.Errorf("number %s, want 1", crl.Number)
	}
	if crl.Stale(vectorTime) || !crl.Stale(time.Date(2037, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Error("Stale wrong")
	}
}

func TestParseCRL(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	other := newTestCA(t, "Test CA", nil)     // same name, other key
	stranger := newTestCA(t, "Other CA", nil) // other name
	der := ca.crl(t, 7, big.NewInt(5), new(big.Int).Lsh(big.NewInt(1), 127))
	pemData := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
	tamperedData := append([]byte(nil), der...)
	tamperedData[len(tamperedData)-5] ^= 1
	tests := []struct {
		name    string
		give    []byte
		cas     []*x509.Certificate
		wantErr error // nil: success; errAny: any error
	}{
		{name: "der", give: der, cas: []*x509.Certificate{ca.cert}},
		{name: "pem", give: pemData, cas: []*x509.Certificate{ca.cert}},
		{name: "pem after other block", give: append(pemCert(ca.cert.Raw), pemData...), cas: []*x509.Certificate{ca.cert}},
		{name: "second CA signs", give: der, cas: []*x509.Certificate{stranger.cert, other.cert, ca.cert}},
		{name: "same name other key", give: der, cas: []*x509.Certificate{other.cert}, wantErr: ErrCRLIssuer},
		{name: "unknown issuer", give: der, cas: []*x509.Certificate{stranger.cert}, wantErr: ErrCRLIssuer},
		{name: "no CAs", give: der, wantErr: ErrCRLIssuer},
		{name: "tampered", give: tamperedData, cas: []*x509.Certificate{ca.cert}, wantErr: errAny},
		{name: "garbage", give: []byte("nope"), cas: []*x509.Certificate{ca.cert}, wantErr: errAny},
		{name: "pem without CRL", give: pemCert(ca.cert.Raw), cas: []*x509.Certificate{ca.cert}, wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crl, err := ParseCRL(tt.give, tt.cas)
			switch {
			case tt.wantErr == errAny && err != nil:
				return
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if crl.Len() != 2 || !crl.Revoked(big.NewInt(5)) || crl.Revoked(big.NewInt(6)) || crl.Number.Int64() != 7 {
				t.Errorf("len %d number %s", crl.Len(), crl.Number)
			}
			if crl.Issuer != ca.cert {
				t.Errorf("issuer %v", crl.Issuer.Subject)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestCRLNil(t *testing.T) {
	var crl *CRL
	if crl.Revoked(big.NewInt(1)) || crl.Len() != 0 || crl.Stale(time.Now()) {
		t.Error("nil CRL should revoke nothing and never be stale")
	}
}

func TestLoadCRLErrorNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.crl")
	if err := os.WriteFile(path, []byte("bad"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCRL(path, nil); err == nil || !strings.Contains(err.Error(), "load CRL "+path) {
		t.Errorf("got %v", err)
	}
}

// bigCRL signs a CRL revoking n random 128-bit serials and returns it with
// one of the serials.
func bigCRL(tb testing.TB, ca *testCA, n int) ([]byte, *big.Int) {
	tb.Helper()
	entries := make([]x509.RevocationListEntry, n)
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for i := range entries {
		s, err := rand.Int(rand.Reader, limit)
		if err != nil {
			tb.Fatal(err)
		}
		entries[i] = x509.RevocationListEntry{SerialNumber: s, RevocationTime: testEpoch}
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: testEpoch, NextUpdate: testEpoch.Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		tb.Fatal(err)
	}
	return der, entries[n/2].SerialNumber
}

func TestParseBigCRL(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	ca := newTestCA(t, "Test CA", nil)
	der, serial := bigCRL(t, ca, n)
	start := time.Now()
	crl, err := ParseCRL(der, []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("parsed %d serials (%d bytes) in %v", crl.Len(), len(der), time.Since(start))
	if crl.Len() != n || !crl.Revoked(serial) {
		t.Errorf("len %d, revoked(%s)=%v", crl.Len(), serial, crl.Revoked(serial))
	}
}

// TestParseMillionCRL measures loading a 1,000,000-serial CRL; it runs only
// with SKNOCK_BIG_CRL=1 because making the CRL takes a while.
func TestParseMillionCRL(t *testing.T) {
	if os.Getenv("SKNOCK_BIG_CRL") == "" {
		t.Skip("set SKNOCK_BIG_CRL=1 to run")
	}
	ca := newTestCA(t, "Test CA", nil)
	der, serial := bigCRL(t, ca, 1_000_000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	crl, err := ParseCRL(der, []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	peak := after.HeapInuse - before.HeapInuse
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("parsed %d serials (%d bytes) in %v; allocated %d MB, heap before GC +%d MB, retained +%d MB",
		crl.Len(), len(der), elapsed, (after.TotalAlloc-before.TotalAlloc)>>20, peak>>20, (after.HeapInuse-before.HeapInuse)>>20)
	if !crl.Revoked(serial) {
		t.Error("serial not revoked")
	}
}

func BenchmarkParseCRL100k(b *testing.B) {
	ca := newTestCA(b, "Test CA", nil)
	der, _ := bigCRL(b, ca, 100_000)
	cas := []*x509.Certificate{ca.cert}
	b.SetBytes(int64(len(der)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseCRL(der, cas); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCRLRevoked(b *testing.B) {
	ca := newTestCA(b, "Test CA", nil)
	der, serial := bigCRL(b, ca, 100_000)
	crl, err := ParseCRL(der, []*x509.Certificate{ca.cert})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !crl.Revoked(serial) {
			b.Fatal("not revoked")
		}
	}
}

func FuzzParseCRL(f *testing.F) {
	ca := newTestCA(f, "Test CA", nil)
	cas := []*x509.Certificate{ca.cert}
	if vec, err := os.ReadFile(vector("ca.crl")); err == nil {
		f.Add(vec)
		if vcas, err := LoadCertificates(vector("ca.pem")); err == nil {
			cas = append(cas, vcas...)
		}
	}
	der := ca.crl(f, 1, big.NewInt(5))
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}))
	f.Add([]byte("-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		crl, err := ParseCRL(data, cas)
		if err != nil {
			return
		}
		crl.Stale(time.Now())
		// Where x509 also accepts the bytes, both must agree.
		if _, err := x509.ParseRevocationList(data); err == nil {
			checkSameAsX509(t, crl, data)
		}
	})
}

// TestParseCRLMatchesX509 checks the entry scanner against
// x509.ParseRevocationList on CRLs with entry extensions, serials needing a
// leading zero byte, and no entries at all.
func TestParseCRLMatchesX509(t *testing.T) {
	ca := newTestCA(t, "Test CA", nil)
	highBit, _ := new(big.Int).SetString("80000000000000000000000000000001", 16)
	withReasons := func() []byte {
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(3), ThisUpdate: testEpoch, NextUpdate: testEpoch.Add(time.Hour),
			RevokedCertificateEntries: []x509.RevocationListEntry{
				{SerialNumber: big.NewInt(1), RevocationTime: testEpoch, ReasonCode: 1},
				{SerialNumber: big.NewInt(0x80), RevocationTime: time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC)}, // GeneralizedTime
				{SerialNumber: highBit, RevocationTime: testEpoch, ReasonCode: 4},
				{SerialNumber: big.NewInt(0), RevocationTime: testEpoch},
			},
		}, ca.cert, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	vec, err := os.ReadFile(vector("ca.crl"))
	if err != nil {
		t.Fatal(err)
	}
	vcas, err := LoadCertificates(vector("ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		give []byte
		cas  []*x509.Certificate
	}{
		{name: "vector", give: vec, cas: vcas},
		{name: "reasons and odd serials", give: withReasons(), cas: []*x509.Certificate{ca.cert}},
		{name: "empty", give: ca.crl(t, 2), cas: []*x509.Certificate{ca.cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crl, err := ParseCRL(tt.give, tt.cas)
			if err != nil {
				t.Fatal(err)
			}
			checkSameAsX509(t, crl, tt.give)
		})
	}
}

func checkSameAsX509(t *testing.T, crl *CRL, der []byte) {
	t.Helper()
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatalf("x509: %v", err)
	}
	if crl.Len() != len(rl.RevokedCertificateEntries) {
		t.Errorf("len %d, x509 has %d", crl.Len(), len(rl.RevokedCertificateEntries))
	}
	for _, e := range rl.RevokedCertificateEntries {
		if !crl.Revoked(e.SerialNumber) {
			t.Errorf("serial %s not revoked", e.SerialNumber)
		}
	}
	if !crl.ThisUpdate.Equal(rl.ThisUpdate) || !crl.NextUpdate.Equal(rl.NextUpdate) || crl.Number.Cmp(rl.Number) != 0 {
		t.Errorf("metadata %v %v %v, x509 %v %v %v", crl.ThisUpdate, crl.NextUpdate, crl.Number, rl.ThisUpdate, rl.NextUpdate, rl.Number)
	}
}

// FuzzCRLEntries fuzzes the entry scanner without the signature check that
// keeps FuzzParseCRL from reaching it, and compares it with x509.
func FuzzCRLEntries(f *testing.F) {
	ca := newTestCA(f, "Test CA", nil)
	f.Add(ca.crl(f, 1, big.NewInt(5), big.NewInt(0x80)))
	f.Add(ca.crl(f, 1))
	if vec, err := os.ReadFile(vector("ca.crl")); err == nil {
		f.Add(vec)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sk, entries, err := splitCRL(data)
		if err != nil {
			return
		}
		revoked, err := revokedSerials(entries)
		if err != nil {
			return
		}
		rl, err := x509.ParseRevocationList(data)
		if err != nil {
			return
		}
		if _, err := x509.ParseRevocationList(sk.der); err != nil {
			t.Fatalf("x509 accepts the CRL but not its skeleton: %v", err)
		}
		set := make(map[string]bool)
		for _, e := range rl.RevokedCertificateEntries {
			set[string(e.SerialNumber.Bytes())] = true
			if _, ok := revoked[string(e.SerialNumber.Bytes())]; !ok {
				t.Fatalf("serial %s missing", e.SerialNumber)
			}
		}
		if len(set) != len(revoked) {
			t.Fatalf("%d serials, x509 has %d", len(revoked), len(set))
		}
	})
}
