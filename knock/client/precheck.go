package client

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"

	"sknock/pki"
)

// ErrBadServerCert is returned (wrapped) by Load when the file given as
// the gatekeeper's certificate cannot be it: a CA or client certificate,
// a PKCS#12 bundle, an expired certificate or one without key agreement.
var ErrBadServerCert = errors.New("not the gatekeeper's certificate")

// ErrBadClientCert is returned (wrapped) by Load when the client's own
// certificate is expired or not yet valid: the gatekeeper would refuse
// every knock signed with it.
var ErrBadClientCert = errors.New("client certificate not valid now")

// ErrNotAuthorised is returned (wrapped) in a Result when the client's
// certificate does not authorise the port asked for; nothing is sent.
var ErrNotAuthorised = errors.New("port not authorised by your certificate")

// dateFormat is how certificate dates appear in messages.
const dateFormat = "2006-01-02 15:04 MST"

// checkServerCert refuses a server certificate the gatekeeper cannot be
// using at now; path names the file in messages.
func checkServerCert(cert *x509.Certificate, path string, now time.Time) error {
	what := fmt.Sprintf("--server-cert %s (%s)", path, cert.Subject)
	switch {
	case cert.IsCA:
		return fmt.Errorf("%w: %s is a CA certificate; give the gatekeeper's own certificate (NAME.pem of 'sknock pki server'), not the CA's", ErrBadServerCert, what)
	case slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(cert.ExtKeyUsage, x509.ExtKeyUsageServerAuth):
		return fmt.Errorf("%w: %s is a client certificate; give the gatekeeper's certificate, not one of a client", ErrBadServerCert, what)
	case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageKeyAgreement == 0:
		return fmt.Errorf("%w: %s is not a key-agreement certificate (its key usage lacks keyAgreement), so knocks cannot be encrypted to it", ErrBadServerCert, what)
	case now.After(cert.NotAfter):
		return fmt.Errorf("%w: %s expired on %s; ask the gatekeeper's operator for the current one", ErrBadServerCert, what, cert.NotAfter.UTC().Format(dateFormat))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: %s is not valid before %s; is this machine's clock right?", ErrBadServerCert, what, cert.NotBefore.UTC().Format(dateFormat))
	}
	return nil
}

// checkClientCert refuses a client certificate outside its validity at
// now; path names the bundle in messages.
func checkClientCert(cert *x509.Certificate, path string, now time.Time) error {
	what := fmt.Sprintf("your certificate %s (in %s)", cert.Subject, path)
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%w: %s expired on %s; the gatekeeper refuses its knocks: ask for a new one", ErrBadClientCert, what, cert.NotAfter.UTC().Format(dateFormat))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%w: %s is not valid before %s; the gatekeeper refuses its knocks until then (or this machine's clock is wrong)", ErrBadClientCert, what, cert.NotBefore.UTC().Format(dateFormat))
	}
	return nil
}

// isPKCS12 reports whether data looks like a PKCS#12 PFX: a SEQUENCE
// starting with INTEGER 3 and a ContentInfo.
func isPKCS12(data []byte) bool {
	in := cryptobyte.String(data)
	var pfx, content cryptobyte.String
	var version int
	return in.ReadASN1(&pfx, asn1.SEQUENCE) && pfx.ReadASN1Integer(&version) && version == 3 &&
		pfx.ReadASN1(&content, asn1.SEQUENCE)
}

// loadServerCert reads and checks the gatekeeper's certificate.
func loadServerCert(path string, now time.Time) (*x509.Certificate, error) {
	bundleErr := func() error {
		if data, err := os.ReadFile(path); err == nil && isPKCS12(data) {
			return fmt.Errorf("%w: --server-cert %s is a PKCS#12 bundle; give the gatekeeper's certificate (DER or PEM, e.g. NAME.pem of 'sknock pki server'), never its bundle", ErrBadServerCert, path)
		}
		return nil
	}
	der, err := pki.LoadCertificateDER(path)
	if err != nil {
		if berr := bundleErr(); berr != nil {
			return nil, berr
		}
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		if berr := bundleErr(); berr != nil {
			return nil, berr
		}
		return nil, fmt.Errorf("server certificate %s: %w", path, err)
	}
	if err := checkServerCert(cert, path, now); err != nil {
		return nil, err
	}
	return cert, nil
}

// authorised refuses a request the client's certificate does not allow,
// with words that say what it does allow. A certificate whose
// authorisation the client cannot read is left to the gatekeeper.
func (c *Client) authorised(req Request) error {
	if !c.allowKnown || c.allow.Allows(req.Proto, req.Port) {
		return nil
	}
	if len(c.allow) == 0 {
		return fmt.Errorf("%w: your certificate allows no port, not %s (nothing sent)", ErrNotAuthorised, req)
	}
	var allowed []string
	for _, p := range c.allow {
		allowed = append(allowed, Request{Proto: p.Proto, Port: p.Port}.String())
	}
	return fmt.Errorf("%w: your certificate allows %s, not %s (nothing sent)", ErrNotAuthorised, strings.Join(allowed, ", "), req)
}

// foreignServerCert returns a hint when the server certificate names
// hosts (DNS names or addresses) and neither host, as given, nor addr is
// one of them: the certificate may be another gatekeeper's, whose key
// this one cannot decrypt. Empty when it names none, or host.
func (c *Client) foreignServerCert(host string, addr string) string {
	if len(c.serverNames) == 0 {
		return ""
	}
	for _, n := range c.serverNames {
		if strings.EqualFold(n, host) || n == addr || (strings.HasPrefix(n, "*.") && strings.HasSuffix(strings.ToLower(host), strings.ToLower(n[1:]))) {
			return ""
		}
	}
	return fmt.Sprintf("the server certificate is for %s, not %s: if it is another gatekeeper's, this one cannot read the knock; ", strings.Join(c.serverNames, ", "), host)
}
