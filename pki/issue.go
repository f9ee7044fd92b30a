package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Files of the CA directory.
const (
	CAKeyFile   = "ca.key"       // CA private key, PEM PKCS#8, mode 0600
	CACertFile  = "ca.pem"       // CA certificate, PEM
	CRLFile     = "ca.crl"       // current CRL, DER
	IndexFile   = "index.json"   // issued certificates: name, kind, serial
	RevokedFile = "revoked.json" // revoked serials and the last CRL number
)

// Defaults for a zero number of days.
const (
	DefaultCADays   = 3650
	DefaultCertDays = 365
	DefaultCRLDays  = 30
)

// backdate is subtracted from notBefore so that a certificate issued on one
// host is already valid on another whose clock is a little behind.
const backdate = time.Hour

// ErrExists is returned (wrapped) when issuing would overwrite a file or
// reuse a name.
var ErrExists = errors.New("already exists")

// IssueOptions tunes IssueServer and IssueClient.
type IssueOptions struct {
	// Days is the validity in days; zero means DefaultCertDays. It is cut
	// to the CA's own validity.
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

func days(n, def int) (time.Duration, error) {
	if n < 0 {
		return 0, fmt.Errorf("invalid number of days %d", n)
	}
	if n == 0 {
		n = def
	}
	return time.Duration(n) * 24 * time.Hour, nil
}

// InitCA creates a new CA in dir (created if missing): a P-256 key in
// DIR/ca.key and a self-signed certificate in DIR/ca.pem valid for days
// (zero: DefaultCADays). It refuses to touch an existing CA.
func InitCA(dir string, validDays int) error {
	if err := initCA(dir, validDays); err != nil {
		return fmt.Errorf("init CA in %s: %w", dir, err)
	}
	return nil
}

func initCA(dir string, validDays int) error {
	validity, err := days(validDays, DefaultCADays)
	if err != nil {
		return err
	}
	for _, f := range []string{CAKeyFile, CACertFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, f), ErrExists)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
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
		Subject:               pkix.Name{CommonName: "sknock CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal CA key: %w", err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	if err := createFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := createFile(filepath.Join(dir, CACertFile), pemCert(der), 0o644); err != nil {
		os.Remove(keyPath)
		return err
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

// Revoke records the certificate issued as name in DIR/revoked.json; the
// next WriteCRL publishes it.
func Revoke(dir, name string) error {
	if err := revoke(dir, name); err != nil {
		return fmt.Errorf("revoke %s in %s: %w", name, dir, err)
	}
	return nil
}

func revoke(dir, name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	idx, err := loadIndex(dir)
	if err != nil {
		return err
	}
	e := idx.find(name)
	if e == nil {
		return fmt.Errorf("no certificate named %s in %s", name, IndexFile)
	}
	rev, err := loadRevoked(dir)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(rev.Revoked, func(r revokedEntry) bool { return r.Serial == e.Serial }) {
		return fmt.Errorf("serial %s: already revoked", e.Serial)
	}
	rev.Revoked = append(rev.Revoked, revokedEntry{Name: name, Serial: e.Serial, RevokedAt: time.Now().UTC()})
	return rev.save(dir)
}

// WriteCRL writes DIR/ca.crl (DER), signed by the CA, listing every revoked
// serial, with the next CRL number and a nextUpdate days from now (zero:
// DefaultCRLDays).
func WriteCRL(dir string, validDays int) error {
	if err := writeCRL(dir, validDays); err != nil {
		return fmt.Errorf("write CRL in %s: %w", dir, err)
	}
	return nil
}

func writeCRL(dir string, validDays int) error {
	validity, err := days(validDays, DefaultCRLDays)
	if err != nil {
		return err
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	rev, err := loadRevoked(dir)
	if err != nil {
		return err
	}
	entries := make([]x509.RevocationListEntry, 0, len(rev.Revoked))
	for _, r := range rev.Revoked {
		serial, ok := new(big.Int).SetString(r.Serial, 10)
		if !ok {
			return fmt.Errorf("%s: bad serial %q", RevokedFile, r.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: r.RevokedAt})
	}
	// The number is saved before the CRL is written: a failure in between
	// skips a number, which is allowed, but never reuses one.
	rev.CRLNumber++
	if err := rev.save(dir); err != nil {
		return err
	}
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(rev.CRLNumber),
		ThisUpdate:                now,
		NextUpdate:                now.Add(validity),
		RevokedCertificateEntries: entries,
	}, ca, caKey)
	if err != nil {
		return fmt.Errorf("create CRL: %w", err)
	}
	return WriteFileAtomic(filepath.Join(dir, CRLFile), der, 0o644)
}

// loadCA reads DIR/ca.pem and DIR/ca.key.
func loadCA(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certs, err := LoadCertificates(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, nil, err
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("load CA key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, nil, fmt.Errorf("load CA key %s: no PEM block", keyPath)
	}
	var key any
	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load CA key %s: %w", keyPath, err)
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || !ecKey.PublicKey.Equal(certs[0].PublicKey) {
		return nil, nil, fmt.Errorf("load CA key %s: not the ECDSA key of %s", keyPath, CACertFile)
	}
	return certs[0], ecKey, nil
}

// randomSerial returns a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyID is the RFC 5280 method 1 key identifier: SHA-1 of the public key bit
// string.
func keyID(pub *ecdsa.PublicKey) []byte {
	point, err := pub.Bytes()
	if err != nil {
		return nil
	}
	sum := sha1.Sum(point)
	return sum[:]
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// createFile writes a new file and fails if it exists.
func createFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteFileAtomic replaces path with data through a temporary file and a
// rename, so readers (a daemon reloading ca.crl) never see half a file.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil { // the rename must not outrun the data
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// index is DIR/index.json: every certificate issued, by name.
type index struct {
	Certificates []indexEntry `json:"certificates"`
}

type indexEntry struct {
	Name          string    `json:"name"`
	Kind          string    `json:"kind"`   // "server" or "client"
	Serial        string    `json:"serial"` // decimal
	NotAfter      time.Time `json:"not_after"`
	Authorization string    `json:"authorization,omitempty"` // wire form
}

func (x *index) find(name string) *indexEntry {
	for i := range x.Certificates {
		if x.Certificates[i].Name == name {
			return &x.Certificates[i]
		}
	}
	return nil
}

func loadIndex(dir string) (*index, error) {
	var x index
	return &x, loadJSON(filepath.Join(dir, IndexFile), &x)
}

func (x *index) save(dir string) error { return saveJSON(filepath.Join(dir, IndexFile), x) }

// revokedList is DIR/revoked.json: revoked serials and the last CRL number.
type revokedList struct {
	CRLNumber int64          `json:"crl_number"`
	Revoked   []revokedEntry `json:"revoked"`
}

type revokedEntry struct {
	Name      string    `json:"name"`
	Serial    string    `json:"serial"` // decimal
	RevokedAt time.Time `json:"revoked_at"`
}

func loadRevoked(dir string) (*revokedList, error) {
	var r revokedList
	return &r, loadJSON(filepath.Join(dir, RevokedFile), &r)
}

func (r *revokedList) save(dir string) error { return saveJSON(filepath.Join(dir, RevokedFile), r) }

// loadJSON reads path into v; a missing file leaves v zero.
func loadJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func saveJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return WriteFileAtomic(path, append(data, '\n'), 0o644)
}
