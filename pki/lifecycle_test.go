package pki

import (
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/packet"
)

func newCADir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := InitCA(dir, 0); err != nil {
		t.Fatal(err)
	}
	return dir
}

func certOf(t *testing.T, dir, name string) *Bundle {
	t.Helper()
	b, err := LoadBundle(filepath.Join(dir, name+".pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// opensslVerify runs openssl verify on DIR/NAME.pem when openssl is on
// PATH, and checks it accepts it.
func opensslVerify(t *testing.T, dir, name string) {
	t.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl not on PATH: not run")
		return
	}
	out, err := exec.Command(openssl, "verify", "-CAfile", filepath.Join(dir, CACertFile), filepath.Join(dir, name+".pem")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Errorf("openssl verify %s: %v\n%s", name, err, out)
	}
}

func TestRenewClient(t *testing.T) {
	dir := newCADir(t)
	allow := Authorization{{packet.TCP, 22}, {packet.UDP, 8000}}
	if err := IssueClient(dir, "alice", allow, "pw", IssueOptions{Days: 30}); err != nil {
		t.Fatal(err)
	}
	old := certOf(t, dir, "alice")
	r, err := Renew(dir, "alice", "pw", RenewOptions{IssueOptions: IssueOptions{Days: 365}})
	if err != nil {
		t.Fatal(err)
	}
	renewed := certOf(t, dir, "alice")
	if r.OldSerial != old.Cert.SerialNumber.String() || r.NewSerial != renewed.Cert.SerialNumber.String() || r.OldSerial == r.NewSerial {
		t.Errorf("renewal %+v; old serial %s, new %s", r, old.Cert.SerialNumber, renewed.Cert.SerialNumber)
	}
	if renewed.Key.Equal(old.Key) || !renewed.Cert.NotAfter.After(old.Cert.NotAfter) {
		t.Error("renewed certificate kept the key or did not extend the validity")
	}
	got, found, err := AuthorizationFromCertificate(renewed.Cert)
	if err != nil || !found || got.CLIString() != "tcp/22,udp/8000" || r.Authorization != "tcp/22,udp/8000" {
		t.Errorf("renewed authorisation %v (%v, %v), renewal says %q; want tcp/22,udp/8000", got, found, err, r.Authorization)
	}
	if _, err := os.Stat(filepath.Join(dir, "alice."+r.OldSerial+".pfx")); err != nil {
		t.Errorf("old bundle not kept: %v", err)
	}
	opensslVerify(t, dir, "alice")

	// A change of authorisation, and the old serial revoked.
	r2, err := Renew(dir, "alice", "pw", RenewOptions{Allow: Authorization{{packet.TCP, 2000}}, SetAllow: true, RevokeOld: true})
	if err != nil {
		t.Fatal(err)
	}
	if r2.Authorization != "tcp/2000" || r2.OldSerial != r.NewSerial {
		t.Errorf("second renewal %+v", r2)
	}
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("List = %+v, want 3 certificates", list)
	}
	want := []struct{ current, revoked bool }{{false, false}, {false, true}, {true, false}}
	for i, w := range want {
		if list[i].Current != w.current || list[i].Revoked != w.revoked || list[i].Name != "alice" || list[i].Kind != "client" {
			t.Errorf("List[%d] = %+v, want current %v revoked %v", i, list[i], w.current, w.revoked)
		}
	}
	if list[2].Authorization != "tcp/2000" || list[0].Authorization != "tcp/22,udp/8000" {
		t.Errorf("authorisations %q, %q", list[0].Authorization, list[2].Authorization)
	}
	// The first certificate, renewed without revocation, by serial.
	if err := RevokeSerial(dir, "alice", r.OldSerial); err != nil {
		t.Fatal(err)
	}
	if err := RevokeSerial(dir, "alice", "12345"); err == nil || !strings.Contains(err.Error(), "no certificate named alice with serial 12345") {
		t.Errorf("RevokeSerial of an unknown serial: %v", err)
	}
	if err := WriteCRL(dir, 0); err != nil {
		t.Fatal(err)
	}
	crl, err := LoadCRL(filepath.Join(dir, CRLFile), mustCAs(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	s := func(dec string) *big.Int { n, _ := new(big.Int).SetString(dec, 10); return n }
	if !crl.Revoked(s(r.OldSerial)) || !crl.Revoked(s(r2.OldSerial)) || crl.Revoked(s(r2.NewSerial)) {
		t.Errorf("CRL: old serials revoked %v %v, current %v; want true true false", crl.Revoked(s(r.OldSerial)), crl.Revoked(s(r2.OldSerial)), crl.Revoked(s(r2.NewSerial)))
	}
}

func TestRenewServerKeepsKey(t *testing.T) {
	dir := newCADir(t)
	if err := IssueServer(dir, "gate1", "pw", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	old := certOf(t, dir, "gate1")
	if _, err := Renew(dir, "gate1", "pw", RenewOptions{KeepKey: true, RevokeOld: true}); !errors.Is(err, ErrKeepKeyRevoke) {
		t.Errorf("keep key and revoke: %v, want ErrKeepKeyRevoke", err)
	}
	if _, err := Renew(dir, "gate1", "pw", RenewOptions{Allow: Authorization{{packet.TCP, 22}}, SetAllow: true}); err == nil {
		t.Error("an authorisation for a server certificate was accepted")
	}
	if _, err := Renew(dir, "gate1", "wrong", RenewOptions{KeepKey: true}); err == nil {
		t.Error("keep key with a wrong password worked")
	}
	r, err := Renew(dir, "gate1", "pw", RenewOptions{KeepKey: true})
	if err != nil {
		t.Fatal(err)
	}
	renewed := certOf(t, dir, "gate1")
	if r.Kind != "server" || !renewed.Key.Equal(old.Key) || renewed.Cert.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 {
		t.Errorf("renewal %+v: same key %v, same serial %v; want the key kept under a new serial", r, renewed.Key.Equal(old.Key), renewed.Cert.SerialNumber.Cmp(old.Cert.SerialNumber) == 0)
	}
	opensslVerify(t, dir, "gate1")
	if _, err := Renew(dir, "nobody", "pw", RenewOptions{}); err == nil || !strings.Contains(err.Error(), "no certificate named nobody") {
		t.Errorf("renew of an unknown name: %v", err)
	}
}

func TestReissueRevokedName(t *testing.T) {
	dir := newCADir(t)
	allow := Authorization{{packet.TCP, 22}}
	if err := IssueClient(dir, "carol", allow, "pw", IssueOptions{}); err != nil {
		t.Fatal(err)
	}
	err := IssueClient(dir, "carol", allow, "pw", IssueOptions{})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "sknock pki renew") {
		t.Errorf("issuing a name in use: %v, want ErrExists with a hint", err)
	}
	old := certOf(t, dir, "carol")
	if err := Revoke(dir, "carol"); err != nil {
		t.Fatal(err)
	}
	if err := IssueClient(dir, "carol", allow, "pw", IssueOptions{}); err != nil {
		t.Fatalf("issuing a revoked name again: %v", err)
	}
	if certOf(t, dir, "carol").Cert.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 {
		t.Error("the reissued certificate has the revoked serial")
	}
	opensslVerify(t, dir, "carol")
	// The new carol is not revoked; revoking "carol" now means her.
	if err := Revoke(dir, "carol"); err != nil {
		t.Errorf("revoking the reissued carol: %v", err)
	}
}

func TestCRLUntilAndStatus(t *testing.T) {
	dir := newCADir(t)
	if _, err := ReadCRLStatus(dir); err == nil || !strings.Contains(err.Error(), "no CRL in") {
		t.Errorf("status without a CRL: %v", err)
	}
	next := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second)
	if err := WriteCRLUntil(dir, next); err != nil {
		t.Fatal(err)
	}
	st, err := ReadCRLStatus(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st.NextUpdate.Equal(next) || st.Number.Int64() != 1 || st.Revoked != 0 {
		t.Errorf("status %+v, want next update %v, number 1, nothing revoked", st, next)
	}
	if err := WriteCRLUntil(dir, time.Now().Add(-time.Hour)); !errors.Is(err, ErrDays) {
		t.Errorf("a next update in the past: %v, want ErrDays", err)
	}
}

func mustCAs(t *testing.T, dir string) []*x509.Certificate {
	t.Helper()
	cas, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	return cas
}
