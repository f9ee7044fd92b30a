package daemon

import (
	"net/netip"
	"os"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/pki"
)

// TestDaemonRenewedClient: alice's certificate is renewed; the renewed
// bundle knocks successfully, and once the old serial is revoked (and
// the CRL reloaded) the old bundle is refused while the new one is not.
func TestDaemonRenewedClient(t *testing.T) {
	dir, cfg := daemonPKI(t)
	p := testpki.Load(t, dir, nil)
	old := p.Issued(t, "alice") // the bundle alice holds before the renewal
	r, err := pki.Renew(dir, "alice", p.Password, pki.RenewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	renewed := testpki.Load(t, dir, nil).Issued(t, "alice")
	if renewed.Serial() != r.NewSerial || old.Serial() != r.OldSerial {
		t.Fatalf("serials: old %s new %s, renewal %+v", old.Serial(), renewed.Serial(), r)
	}
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	src := netip.MustParseAddr("198.18.0.2")
	knock := func(c *testpki.Client) gate.Decision {
		injectKnock(t, f, src.String(), c.Seal(t, p.ServerKey, packet.TCP, 2000, src, time.Now()))
		return d.knocks.next(t, "knock").dec
	}
	for name, c := range map[string]*testpki.Client{"renewed": renewed, "old, not yet revoked": old} {
		if dec := knock(c); !dec.Granted() {
			t.Fatalf("%s bundle: %v (%v), want a grant", name, dec.Reason, dec.Err)
		}
	}
	if err := pki.RevokeSerial(dir, "alice", r.OldSerial); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
	d.hup <- os.Interrupt
	if err := d.reloads.next(t, "reload"); err != nil {
		t.Fatal(err)
	}
	if dec := knock(old); dec.Reason != gate.ReasonRevoked {
		t.Errorf("old bundle after the revocation: %v, want revoked", dec.Reason)
	}
	if dec := knock(renewed); !dec.Granted() {
		t.Errorf("renewed bundle after the old one's revocation: %v (%v), want a grant", dec.Reason, dec.Err)
	}
}
