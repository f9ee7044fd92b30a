package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"testing"
	"time"
)

// crlWith signs a CRL revoking serial 5 that carries extra extensions.
func (ca *testCA) crlWith(t testing.TB, next time.Time, exts ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(1),
		ThisUpdate:                testEpoch.Add(-time.Hour),
		NextUpdate:                next,
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(5), RevocationTime: testEpoch}},
		ExtraExtensions:           exts,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCRLRefusesIncompleteCRLs(t *testing.T) {
	ca := newTestCA(t, "Scope CA", nil)
	// IssuingDistributionPoint with onlyContainsUserCerts [1] TRUE.
	idp := []byte{0x30, 0x03, 0x81, 0x01, 0xff}
	delta, _ := asn1.Marshal(big.NewInt(3))
	next := testEpoch.Add(24 * time.Hour)
	tests := []struct {
		name    string
		give    []byte
		wantErr error
	}{
		{name: "complete", give: ca.crlWith(t, next)},
		{name: "delta CRL", give: ca.crlWith(t, next, pkix.Extension{Id: oidDeltaCRLIndicator, Critical: true, Value: delta}), wantErr: ErrCRLScope},
		{name: "issuing distribution point", give: ca.crlWith(t, next, pkix.Extension{Id: oidIssuingDistributionPt, Critical: true, Value: idp}), wantErr: ErrCRLScope},
		{name: "non-critical issuing distribution point", give: ca.crlWith(t, next, pkix.Extension{Id: oidIssuingDistributionPt, Value: idp}), wantErr: ErrCRLScope},
		{name: "unknown critical extension", give: ca.crlWith(t, next, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{5, 0}}), wantErr: ErrCRLScope},
		{name: "unknown non-critical extension", give: ca.crlWith(t, next, pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Value: []byte{5, 0}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			crl, err := ParseCRL(tt.give, []*x509.Certificate{ca.cert})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("ParseCRL error = %v, want %v", err, tt.wantErr)
			}
			if err == nil && !crl.Revoked(big.NewInt(5)) {
				t.Error("complete CRL does not revoke serial 5")
			}
		})
	}
}

func TestCombineCRLs(t *testing.T) {
	a, b := newTestCA(t, "CA A", nil), newTestCA(t, "CA B", nil)
	cas := []*x509.Certificate{a.cert, b.cert}
	crlA, err := ParseCRL(a.crl(t, 1, big.NewInt(5)), cas)
	if err != nil {
		t.Fatal(err)
	}
	crlB, err := ParseCRL(b.crlWith(t, testEpoch.Add(time.Hour)), cas)
	if err != nil {
		t.Fatal(err)
	}
	if Combine() != nil || Combine(nil, nil) != nil {
		t.Error("Combine of nothing is not nil")
	}
	if Combine(nil, crlA) != crlA {
		t.Error("Combine of one CRL is not that CRL")
	}
	crlB2, err := ParseCRL(b.crl(t, 2, big.NewInt(9)), cas)
	if err != nil {
		t.Fatal(err)
	}
	both := Combine(crlA, crlB2)
	if both.Len() != 2 || !both.Revoked(big.NewInt(5)) || !both.Revoked(big.NewInt(9)) || both.Revoked(big.NewInt(7)) {
		t.Errorf("combined CRL: %d serials, revoked(5,9,7) = %v %v %v", both.Len(), both.Revoked(big.NewInt(5)), both.Revoked(big.NewInt(9)), both.Revoked(big.NewInt(7)))
	}
	if got := both.RevokedSince(crlA); len(got) != 1 || got[0].Int64() != 9 {
		t.Errorf("RevokedSince(A) = %v, want [9]", got)
	}
	early := Combine(crlA, crlB)
	if !early.NextUpdate.Equal(crlB.NextUpdate) {
		t.Errorf("combined NextUpdate = %v, want the earliest %v", early.NextUpdate, crlB.NextUpdate)
	}
}

func TestStaleCRLRefusesWhenAsked(t *testing.T) {
	ca := newTestCA(t, "Stale CA", nil)
	cas := []*x509.Certificate{ca.cert}
	next := testEpoch.Add(24 * time.Hour)
	crl, err := ParseCRL(ca.crlWith(t, next), cas)
	if err != nil {
		t.Fatal(err)
	}
	der := ca.issue(t, clientTemplate(t, 77, "1.22"), nil)
	before, after := next.Add(-time.Minute), next.Add(time.Minute)
	tests := []struct {
		name    string
		crl     *CRL
		at      time.Time
		wantErr error
	}{
		{name: "kept: fresh", crl: crl, at: before},
		{name: "kept: stale still applies", crl: crl, at: after},
		{name: "refuse: fresh", crl: crl.RefusingWhenStale(), at: before},
		{name: "refuse: stale refuses all", crl: crl.RefusingWhenStale(), at: after, wantErr: ErrCRLStale},
		{name: "refuse survives Combine", crl: Combine(crl.RefusingWhenStale(), nil), at: after, wantErr: ErrCRLStale},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewVerifier(cas, tt.crl)
			_, err := v.Verify(der, tt.at)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil && !errors.Is(err, ErrRevoked) {
				t.Errorf("Verify error = %v, want it to wrap ErrRevoked too", err)
			}
		})
	}
	if crl.Stale(before) || !crl.RefusingWhenStale().Stale(after) {
		t.Error("RefusingWhenStale changed Stale")
	}
}
