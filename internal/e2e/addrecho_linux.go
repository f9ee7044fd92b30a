package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/internal/netns"
)

// AddressEcho is an HTTPS endpoint that echoes the caller's address (what
// sknock's --address-url asks), served inside a namespace with a
// certificate of a CA of its own.
type AddressEcho struct {
	// URL is its https:// URL.
	URL string
	// CAFile holds its CA's certificate (PEM): give it to the client as
	// SSL_CERT_FILE, and the client's system roots trust the echo.
	CAFile string
}

// ServeAddressEcho serves an address echo on addr inside ns until t ends,
// with a certificate for addr's IP from a CA of its own. With forged
// valid, it answers forged instead of the caller's address (a forger on
// the path: its CA is not the client's).
func ServeAddressEcho(t testing.TB, ns *netns.NS, addr netip.AddrPort, forged netip.Addr) AddressEcho {
	t.Helper()
	ca, caKey := newEchoCert(t, nil, nil, netip.Addr{})
	leaf, leafKey := newEchoCert(t, ca, caKey, addr.Addr())
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("address echo on %s in %s: %v", addr, ns.Name, err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, err := netip.ParseAddrPort(r.RemoteAddr)
			answer := caller.Addr().Unmap()
			if forged.IsValid() {
				answer = forged
			} else if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Write([]byte(answer.String() + "\n"))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey}}},
		ReadHeaderTimeout: 5 * time.Second,
	}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	caFile := filepath.Join(t.TempDir(), "echo-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return AddressEcho{URL: "https://" + addr.String() + "/ip", CAFile: caFile}
}

// newEchoCert makes a CA (parent nil) or a server certificate for ip
// signed by parent.
func newEchoCert(t testing.TB, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, ip netip.Addr) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "sknock test address echo CA"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign
	} else {
		tmpl.Subject.CommonName = ip.String()
		tmpl.IPAddresses = []net.IP{ip.AsSlice()}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
