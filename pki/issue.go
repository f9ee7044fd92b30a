package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// IssueOptions tunes IssueServer and IssueClient.
type IssueOptions struct {
	// Days is the validity in days; zero means DefaultCertDays. It is cut
	// to the CA's own validity. Below zero or above MaxDays, issuing fails
	// with ErrDays.
	Days int
	// Legacy writes the bundle with RC2-40 certificates, a 3DES key and a
	// SHA-1 MAC, as the original project's OpenSSL did, for old OpenSSL
	// and the original clients (OpenSSL 3 needs -legacy to read it). The
	// default is PBES2/AES-256 with a SHA-256 MAC.
	Legacy bool
}

// validNameChars reports whether name is 1 to 64 of [A-Za-z0-9._-]. (A
// loop rather than a regexp: every client pays a package's init at start.)
func validNameChars(name string) bool {
	if len(name) == 0 || len(name) > 64 {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// ValidateName checks a certificate name used for DIR/NAME.pfx and
// DIR/NAME.pem: 1 to 64 of [A-Za-z0-9._-], not only dots, not starting
// with '-', and not "ca" (which would collide with the CA's files).
func ValidateName(name string) error {
	switch {
	case !validNameChars(name):
		return fmt.Errorf("invalid name %q: want 1 to 64 of A-Z a-z 0-9 . _ -", name)
	case name[0] == '-' || name[0] == '.':
		return fmt.Errorf("invalid name %q: must not start with '-' or '.'", name)
	case name == "ca":
		return fmt.Errorf("invalid name %q: reserved for the CA", name)
	}
	return nil
}

// IssueServer issues the gatekeeper's certificate (serverAuth,
// digitalSignature and keyAgreement) and writes DIR/NAME.pfx (key,
// certificate and CA certificate, encrypted with password, mode 0600) and
// DIR/NAME.pem (the certificate). The key exists only in the bundle.
func IssueServer(dir, name, password string, opts IssueOptions) error {
	if err := issue(dir, name, password, opts, "server", nil); err != nil {
		return fmt.Errorf("issue server certificate %s in %s: %w", name, dir, err)
	}
	return nil
}

// IssueClient issues a client certificate (clientAuth, digitalSignature and
// keyAgreement) carrying allow as its authorisation name (none if allow is
// empty), and writes DIR/NAME.pfx and DIR/NAME.pem like IssueServer.
func IssueClient(dir, name string, allow Authorization, password string, opts IssueOptions) error {
	if err := issue(dir, name, password, opts, "client", allow); err != nil {
		return fmt.Errorf("issue client certificate %s in %s: %w", name, dir, err)
	}
	return nil
}

func issue(dir, name, password string, opts IssueOptions, kind string, allow Authorization) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	validity, err := days(opts.Days, DefaultCertDays)
	if err != nil {
		return err
	}
	pfxPath, pemPath := filepath.Join(dir, name+".pfx"), filepath.Join(dir, name+".pem")
	for _, p := range []string{pfxPath, pemPath} {
		if _, err := os.Stat(p); err == nil {
			return fmt.Errorf("%s: %w", p, ErrExists)
		}
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	idx, err := loadIndex(dir)
	if err != nil {
		return err
	}
	if idx.find(name) != nil {
		return fmt.Errorf("name %s in %s: %w", name, IndexFile, ErrExists)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	switch kind {
	case "server":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case "client":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if len(allow) > 0 {
			san, err := MarshalAuthorizationSAN(allow)
			if err != nil {
				return err
			}
			tmpl.ExtraExtensions = []pkix.Extension{san}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse new certificate: %w", err)
	}
	encoder := pkcs12.Modern
	if opts.Legacy {
		encoder = pkcs12.LegacyRC2
	}
	pfx, err := encoder.Encode(key, cert, []*x509.Certificate{ca}, password)
	if err != nil {
		return fmt.Errorf("encode PKCS#12: %w", err)
	}
	if err := createFile(pfxPath, pfx, 0o600); err != nil {
		return err
	}
	if err := createFile(pemPath, pemCert(der), 0o644); err != nil {
		os.Remove(pfxPath)
		return err
	}
	idx.Certificates = append(idx.Certificates, indexEntry{
		Name: name, Kind: kind, Serial: serial.String(),
		NotAfter: tmpl.NotAfter.UTC(), Authorization: allow.String(),
	})
	return idx.save(dir)
}
