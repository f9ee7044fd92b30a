package testpki_test

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/knock"
	"sknock/packet"
)

func TestPKISealRevokeLoad(t *testing.T) {
	p := testpki.New(t, &testpki.Options{Clients: map[string]string{"alice": "tcp/2000"}})
	if got, err := os.ReadFile(p.PasswordFile); err != nil || string(got) != testpki.DefaultPassword+"\n" {
		t.Errorf("password file %q, %v; want %q", got, err, testpki.DefaultPassword+"\n")
	}
	if p.LoadCRL(t) != nil {
		t.Error("LoadCRL found a CRL before any was written")
	}
	at := time.Unix(1767225600, 0)
	src := netip.MustParseAddr("198.18.0.2")
	data := p.Seal(t, "alice", packet.TCP, 2000, src, at)
	key, err := p.Server.ECDHKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := knock.Open(data, key, false)
	if err != nil {
		t.Fatal(err)
	}
	if k.Proto != packet.TCP || k.Port != 2000 || k.ClientIP != src || k.Timestamp != uint32(at.Unix()) {
		t.Errorf("opened %+v, want tcp/2000 from %s at %d", k, src, at.Unix())
	}

	bob := p.Client(t, "bob", "")
	p.Revoke(t, "alice")
	crl := p.LoadCRL(t)
	if crl == nil || !crl.Revoked(p.Issued(t, "alice").Cert.SerialNumber) || crl.Revoked(bob.Cert.SerialNumber) {
		t.Errorf("CRL after revoking alice: %+v", crl)
	}

	// Load reopens the directory and finds the clients issued before.
	again := testpki.Load(t, p.Dir, nil)
	if got := again.Issued(t, "bob").Serial(); got != bob.Serial() {
		t.Errorf("reloaded bob's serial %s, want %s", got, bob.Serial())
	}
}
