package pki

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/packet"
)

func TestIntermediateCA(t *testing.T) {
	root := newCADir(t)
	sub := filepath.Join(t.TempDir(), "ops-ca")
	if err := InitIntermediate(sub, root, "ops", 0); err != nil {
		t.Fatal(err)
	}
	if err := InitIntermediate(sub, root, "ops2", 0); !errors.Is(err, ErrExists) {
		t.Errorf("a second intermediate in the same directory: %v, want ErrExists", err)
	}
	if err := IssueClient(sub, "dave", Authorization{{packet.TCP, 2000}}, "pw", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	opensslVerify(t, sub, "dave") // sub/ca.pem holds the intermediate and the root
	cas, err := LoadCertificates(filepath.Join(sub, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(cas) != 2 || cas[0].Subject.CommonName != "sknock CA ops" || !IsIntermediate(cas[0], cas) || IsIntermediate(cas[1], cas) {
		t.Fatalf("sub/ca.pem: %d certificates, first %v; want the intermediate then the root", len(cas), cas[0].Subject)
	}
	if IsIntermediate(cas[0], cas[:1]) {
		t.Error("an intermediate listed without its issuer counts as an intermediate")
	}
	dave := certOf(t, sub, "dave").Cert.Raw
	now := time.Now()
	for name, v := range map[string]*Verifier{"root and intermediate": NewVerifier(cas, nil), "intermediate alone": NewVerifier(cas[:1], nil)} {
		if _, err := v.Verify(dave, now); err != nil {
			t.Errorf("%s: dave: %v", name, err)
		}
	}
	if _, err := NewVerifier(cas[1:], nil).Verify(dave, now); !errors.Is(err, ErrUntrusted) {
		t.Errorf("root alone (no intermediate listed): %v, want ErrUntrusted", err)
	}

	// The root's CRL revokes the intermediate: dave is refused.
	if err := Revoke(root, "ops"); err != nil {
		t.Fatal(err)
	}
	if err := WriteCRL(root, 0); err != nil {
		t.Fatal(err)
	}
	rootCRL, err := LoadCRL(filepath.Join(root, CRLFile), cas)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewVerifier(cas, rootCRL).Verify(dave, now)
	if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "issuing CA CN=sknock CA ops") {
		t.Errorf("intermediate revoked by the root: %v, want ErrRevoked naming it", err)
	}

	// The intermediate's own CRL revokes dave.
	if err := Revoke(sub, "dave"); err != nil {
		t.Fatal(err)
	}
	if err := WriteCRL(sub, 0); err != nil {
		t.Fatal(err)
	}
	subCRL, err := LoadCRL(filepath.Join(sub, CRLFile), cas)
	if err != nil {
		t.Fatal(err)
	}
	if subCRL.Issuer != cas[0] {
		t.Errorf("the intermediate's CRL is attributed to %v", subCRL.Issuer.Subject)
	}
	if _, err := NewVerifier(cas, subCRL).Verify(dave, now); !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "serial") {
		t.Errorf("dave revoked by the intermediate: %v, want ErrRevoked", err)
	}
	list, err := List(root)
	if err != nil || len(list) != 1 || list[0].Kind != "ca" || list[0].Name != "ops" || !list[0].Revoked {
		t.Errorf("root's list = %+v, %v; want ops, kind ca, revoked", list, err)
	}
}
