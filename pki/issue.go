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
// DIR/NAME.pem (the certificate). The key exists only in the bundle. A
// name in use is refused (ErrExists) unless its certificate was revoked:
// then the name is issued again, and the revoked certificate's files are
// kept as DIR/NAME.SERIAL.pfx and .pem.
func IssueServer(dir, name, password string, opts IssueOptions) error {
	if _, err := issue(issueRequest{dir: dir, name: name, password: password, opts: opts, kind: "server"}); err != nil {
		return fmt.Errorf("issue server certificate %s in %s: %w", name, dir, err)
	}
	return nil
}

// IssueClient issues a client certificate (clientAuth, digitalSignature and
// keyAgreement) carrying allow as its authorisation name (none if allow is
// empty), and writes DIR/NAME.pfx and DIR/NAME.pem like IssueServer.
func IssueClient(dir, name string, allow Authorization, password string, opts IssueOptions) error {
	if _, err := issue(issueRequest{dir: dir, name: name, password: password, opts: opts, kind: "client", allow: allow}); err != nil {
		return fmt.Errorf("issue client certificate %s in %s: %w", name, dir, err)
	}
	return nil
}

// issueRequest is one certificate to issue.
type issueRequest struct {
	dir, name, password string
	opts                IssueOptions
	kind                string // "server" or "client"
	allow               Authorization
	// key is the certificate's key; nil means a new one.
	key *ecdsa.PrivateKey
	// renew replaces the name's current certificate, revoked or not.
	renew bool
}

// issue issues r and returns the entry it added to the index. When the
// name is in use (by a revoked certificate, or r.renew), the old files
// are renamed to NAME.SERIAL.pfx and .pem first, and renamed back if
// writing the new ones fails.
func issue(r issueRequest) (*indexEntry, error) {
	dir, name := r.dir, r.name
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	validity, err := days(r.opts.Days, DefaultCertDays)
	if err != nil {
		return nil, err
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return nil, err
	}
	idx, err := loadIndex(dir)
	if err != nil {
		return nil, err
	}
	cur := idx.find(name)
	replace := r.renew
	if cur != nil && !replace {
		rev, err := loadRevoked(dir)
		if err != nil {
			return nil, err
		}
		if !rev.has(cur.Serial) {
			return nil, fmt.Errorf("name %s in %s: %w (serial %s, valid until %s): renew it with 'sknock pki renew', or revoke it to issue the name again",
				name, IndexFile, ErrExists, cur.Serial, cur.NotAfter.Format(time.DateOnly))
		}
		replace = true // a revoked name is issued again
	}
	if cur == nil && replace {
		return nil, fmt.Errorf("no certificate named %s in %s", name, IndexFile)
	}
	pfxPath, pemPath := filepath.Join(dir, name+".pfx"), filepath.Join(dir, name+".pem")
	if !replace {
		for _, p := range []string{pfxPath, pemPath} {
			if _, err := os.Stat(p); err == nil {
				return nil, fmt.Errorf("%s: %w", p, ErrExists)
			}
		}
	}
	key := r.key
	if key == nil {
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, fmt.Errorf("generate key: %w", err)
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
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
	switch r.kind {
	case "server":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	case "client":
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		if len(r.allow) > 0 {
			san, err := MarshalAuthorizationSAN(r.allow)
			if err != nil {
				return nil, err
			}
			tmpl.ExtraExtensions = []pkix.Extension{san}
		}
	default:
		return nil, fmt.Errorf("%s in %s: unknown kind %q", name, IndexFile, r.kind)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new certificate: %w", err)
	}
	encoder := pkcs12.Modern
	if r.opts.Legacy {
		encoder = pkcs12.LegacyRC2
	}
	pfx, err := encoder.Encode(key, cert, []*x509.Certificate{ca}, r.password)
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#12: %w", err)
	}
	var restore func()
	if replace {
		if restore, err = archive(dir, name, cur.Serial); err != nil {
			return nil, err
		}
	}
	if err := createFile(pfxPath, pfx, 0o600); err != nil {
		restoreIf(restore)
		return nil, err
	}
	if err := createFile(pemPath, pemCert(der), 0o644); err != nil {
		os.Remove(pfxPath)
		restoreIf(restore)
		return nil, err
	}
	idx.Certificates = append(idx.Certificates, indexEntry{
		Name: name, Kind: r.kind, Serial: serial.String(),
		NotAfter: tmpl.NotAfter.UTC(), Authorization: r.allow.String(),
	})
	if err := idx.save(dir); err != nil {
		return nil, err
	}
	return &idx.Certificates[len(idx.Certificates)-1], nil
}

func restoreIf(restore func()) {
	if restore != nil {
		restore()
	}
}

// archive renames NAME.pfx and NAME.pem, where they exist, to
// NAME.SERIAL.pfx and .pem, and returns how to undo it.
func archive(dir, name, serial string) (restore func(), err error) {
	var moved [][2]string
	restore = func() {
		for _, m := range moved {
			os.Rename(m[1], m[0])
		}
	}
	for _, ext := range []string{".pfx", ".pem"} {
		from, to := filepath.Join(dir, name+ext), filepath.Join(dir, name+"."+serial+ext)
		if _, err := os.Stat(from); err != nil {
			continue
		}
		if _, err := os.Stat(to); err == nil {
			restore()
			return nil, fmt.Errorf("keep the old certificate as %s: %w", to, ErrExists)
		}
		if err := os.Rename(from, to); err != nil {
			restore()
			return nil, fmt.Errorf("keep the old certificate: %w", err)
		}
		moved = append(moved, [2]string{from, to})
	}
	return restore, nil
}
