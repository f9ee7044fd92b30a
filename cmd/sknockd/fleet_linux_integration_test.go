//go:build linux

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/packet"
)

// The fleet's network: one /24 on a bridge in the CRL host's namespace.
var (
	fleetCRLHost = netip.MustParseAddr("198.18.3.254")
	fleetClient  = netip.MustParseAddr("198.18.3.100")
)

func fleetGate(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 3, byte(i + 1)}) }

// fleetRefresh is the gatekeepers' crl.refresh.
const fleetRefresh = 2 * time.Second

// crlHost serves the CA directory's ca.crl at /ca.crl over HTTP and
// HTTPS, with an ETag of its content, and the bad answers of the test:
// /down (HTTPS) redirects to plain HTTP, /big is over the size bound,
// /delta is a delta CRL. It records, per client address, how many full
// answers and 304s /ca.crl gave.
type crlHost struct {
	caDir string
	delta []byte
	mu    sync.Mutex
	full  map[string]int
	unmod map[string]int
}

func (h *crlHost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/down":
		http.Redirect(w, r, fmt.Sprintf("http://%s/ca.crl", fleetCRLHost), http.StatusFound)
		return
	case "/big":
		w.Write(make([]byte, 17<<20))
		return
	case "/delta":
		w.Write(h.delta)
		return
	}
	data, err := os.ReadFile(filepath.Join(h.caDir, "ca.crl"))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	sum := sha256.Sum256(data)
	etag := `"` + hex.EncodeToString(sum[:8]) + `"`
	client, _, _ := net.SplitHostPort(r.RemoteAddr)
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Header.Get("If-None-Match") == etag {
		h.unmod[client]++
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.full[client]++
	w.Header().Set("ETag", etag)
	w.Write(data)
}

func (h *crlHost) counts(client netip.Addr) (full, unmod int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.full[client.String()], h.unmod[client.String()]
}

// serveIn runs h on addr inside ns (TLS when cert is set) until t ends.
func serveIn(t *testing.T, ns *netns.NS, addr string, h http.Handler, cert *tls.Certificate) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}})
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

// selfSignedFor makes a TLS certificate for ip and writes it (PEM) to
// a file that SSL_CERT_FILE can name, so the daemons trust it.
func selfSignedFor(t *testing.T, ip netip.Addr) (*tls.Certificate, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "crl host"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{ip.AsSlice()}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "crlhost.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, path
}

// deltaCRL signs a delta CRL with the CA in dir.
func deltaCRL(t *testing.T, dir string) []byte {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		if key, err = x509.ParseECPrivateKey(kb.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	base, _ := asn1.Marshal(big.NewInt(1))
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1000), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(24 * time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: base}},
	}, ca, key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// attachFleet links ns to the bridge in hub with addr/24.
func attachFleet(hub, ns *netns.NS, port string, addr netip.Addr) {
	hub.MustRun("ip", "link", "add", port, "type", "veth", "peer", "name", "veth0", "netns", ns.Name)
	hub.MustRun("ip", "link", "set", port, "master", "br0", "up")
	ns.MustRun("ip", "addr", "add", addr.String()+"/24", "dev", "veth0")
	ns.MustRun("ip", "link", "set", "veth0", "up")
}

// fleetConfig is gatekeeper i's configuration: its own CRL copy, replay
// file and control socket, the fleet's CRL URL.
func fleetConfig(p *e2e.PKI, dir, crlFile, url string) string {
	return fmt.Sprintf(`server:
  pkcs12: %s
  password_file: %s
crl:
  file: %s
  url: %s
  refresh: %s
knock:
  ports: "40000:40100"
  replay_file: %s
gate:
  protect: [tcp/2000]
  policy: reject
control:
  socket: %s
`, p.ServerPKCS12, p.PasswordFile, crlFile, url, fleetRefresh, filepath.Join(dir, "replay"), filepath.Join(dir, "control.sock"))
}

// TestIntegrationFleetCRL: three gatekeepers in three namespaces fetch the
// CA's CRL from a fourth over HTTP. Two start with only crl.url (no
// crl.file yet) and come up; the next fetch of the unchanged CRL is a 304
// at each; one `sknock pki revoke` + `sknock pki crl` at the CA refuses
// the revoked client on all three within a refresh; a redirect from https
// to http, an oversized CRL and a delta CRL are refused, each with a log
// line saying so, and the last good CRL stays in force.
func TestIntegrationFleetCRL(t *testing.T) {
	requireTools(t, "bridge")
	p := e2e.NewPKI(t)
	alice := p.Client(t, "alice", "tcp/2000")

	hub := netns.New(t, "crl")
	hub.MustRun("ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
	hub.MustRun("ip", "addr", "add", fleetCRLHost.String()+"/24", "dev", "br0")
	hub.MustRun("ip", "link", "set", "br0", "up")
	client := netns.New(t, "fcl")
	attachFleet(hub, client, "vcli", fleetClient)
	var gates [3]*netns.NS
	for i := range gates {
		gates[i] = netns.New(t, fmt.Sprintf("gk%d", i+1))
		attachFleet(hub, gates[i], fmt.Sprintf("vgk%d", i+1), fleetGate(i))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if out, _ := hub.Run("bridge", "link", "show"); strings.Count(out, "state forwarding") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bridge ports not forwarding after 5 s")
		}
	}

	origin := &crlHost{caDir: p.Dir, delta: deltaCRL(t, p.Dir), full: map[string]int{}, unmod: map[string]int{}}
	cert, certFile := selfSignedFor(t, fleetCRLHost)
	t.Setenv("SSL_CERT_FILE", certFile) // the daemons inherit it: they trust the CRL host's HTTPS
	serveIn(t, hub, fleetCRLHost.String()+":80", origin, nil)
	serveIn(t, hub, fleetCRLHost.String()+":443", origin, cert)
	url := fmt.Sprintf("http://%s/ca.crl", fleetCRLHost)

	var daemons [3]*e2e.Daemon
	for i, ns := range gates {
		dir := t.TempDir()
		crlFile := filepath.Join(dir, "crl", "ca.crl") // gatekeepers 1 and 2: not there yet
		if i == 2 {
			data, err := os.ReadFile(p.CRLFile())
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Dir(crlFile), 0o755)
			if err := os.WriteFile(crlFile, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		daemons[i] = e2e.StartDaemon(t, &e2e.Net{Server: ns}, fleetConfig(p, dir, crlFile, url))
	}

	// Each gatekeeper's second fetch of the unchanged CRL is a 304.
	for i := range gates {
		for deadline := time.Now().Add(3*fleetRefresh + 5*time.Second); ; time.Sleep(50 * time.Millisecond) {
			full, unmod := origin.counts(fleetGate(i))
			if unmod > 0 {
				if full != 1 {
					t.Errorf("gatekeeper %d: %d full CRLs before its first 304, want 1", i+1, full)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("gatekeeper %d: no 304 (full answers %d)", i+1, full)
			}
		}
	}

	knockAt := func(i int) e2e.Line {
		t.Helper()
		d := daemons[i]
		from := len(d.Lines())
		datagram := alice.Seal(t, p.ServerKey, packet.TCP, 2000, fleetClient)
		if err := e2e.SendUDP(client, e2e.AddrPort(fleetGate(i), e2e.KnockPort), datagram); err != nil {
			t.Fatal(err)
		}
		return d.WaitLine(from, logTimeout, func(l e2e.Line) bool { return l.Msg() == "knock" && l.String("source") == fleetClient.String() })
	}
	for i := range gates {
		checkLine(t, knockAt(i), map[string]string{"verdict": "grant", "serial": alice.Serial()})
	}

	// One revocation at the CA reaches all three within a refresh.
	var marks [3]int
	for i, d := range daemons {
		marks[i] = len(d.Lines())
	}
	revoked := time.Now()
	p.Revoke(t, "alice") // sknock pki revoke + sknock pki crl
	for i, d := range daemons {
		d.WaitLine(marks[i], fleetRefresh+logTimeout, func(l e2e.Line) bool {
			return l.Msg() == "trust reloaded (CRL refresh)" && l.String("crl_revoked") == "1"
		})
		t.Logf("gatekeeper %d applied the revocation %v after it was published (crl.refresh %v)", i+1, time.Since(revoked).Round(10*time.Millisecond), fleetRefresh)
	}
	for i := range gates {
		checkLine(t, knockAt(i), map[string]string{"verdict": "deny", "reason": "revoked"})
	}

	// Bad answers, one after the other at gatekeeper 3: each refused with
	// its reason, and alice stays revoked.
	d := daemons[2]
	for _, tt := range []struct{ url, want string }{
		{fmt.Sprintf("https://%s/down", fleetCRLHost), "redirect from https to http refused"},
		{fmt.Sprintf("http://%s/big", fleetCRLHost), "CRL larger than the size bound"},
		{fmt.Sprintf("http://%s/delta", fleetCRLHost), "not a complete CRL: a delta CRL"},
	} {
		config, err := os.ReadFile(d.Config)
		if err != nil {
			t.Fatal(err)
		}
		cur := config[strings.Index(string(config), "  url: "):strings.Index(string(config), "  refresh:")]
		config = []byte(strings.Replace(string(config), string(cur), "  url: "+tt.url+"\n", 1))
		if err := os.WriteFile(d.Config, config, 0o600); err != nil {
			t.Fatal(err)
		}
		from := len(d.Lines())
		d.Signal(syscall.SIGHUP)
		line := d.WaitLine(from, fleetRefresh+logTimeout, func(l e2e.Line) bool {
			return l.Msg() == "crl fetch failed, keeping the last good CRL" && strings.Contains(l.String("error"), tt.want)
		})
		if !strings.Contains(line.String("error"), tt.url) {
			t.Errorf("%s: the log line does not name the URL: %v", tt.url, line)
		}
	}
	checkLine(t, knockAt(2), map[string]string{"verdict": "deny", "reason": "revoked"})
}
