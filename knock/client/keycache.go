package client

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"sknock/pki"
)

// The key cache keeps an unlocked bundle (its private key and certificate)
// in the kernel's per-user keyring for Config.KeyCache, so that knocks in
// that time skip the bundle's password-based decryption: three PBKDF2
// derivations, about 2 ms, most of a knock's cost. It is the ssh-agent
// trade-off: while the entry lives, any process of the same user can read
// the key without the password. The password still matters: it is part of
// the entry's name, so a wrong one misses and fails as before.

// keyCacheDescPrefix starts the description of every cache entry, so an
// operator can list or purge them: keyctl purge -p user sknock:.
const keyCacheDescPrefix = "sknock:bundle:"

// keyCacheVersion is the first payload byte; other versions are misses.
const keyCacheVersion = 1

// keyring is the kernel keyring, or a fake in tests. get returns the
// payload of the entry named desc, or ok false; put stores one that
// expires after ttl. Both are best effort: a keyring that does not work
// only costs the decryption.
type keyring interface {
	get(desc string) (payload []byte, ok bool)
	put(desc string, payload []byte, ttl time.Duration) error
}

// keyCacheDesc names the cache entry of a bundle's bytes unlocked with
// password. The bundle's bytes salt the hash, so the name changes when the
// bundle is reissued.
func keyCacheDesc(bundle []byte, password string) string {
	h := sha256.New()
	h.Write([]byte("sknock key cache v1\x00"))
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(bundle)))
	h.Write(n[:])
	h.Write(bundle)
	h.Write([]byte(password))
	return keyCacheDescPrefix + hex.EncodeToString(h.Sum(nil)[:20])
}

// unlockedKey is what the key cache keeps of a bundle: the private key
// and the DER of its certificate, all a client needs to knock.
type unlockedKey struct {
	key  *ecdsa.PrivateKey
	cert []byte
}

// encodeCachedKey is the payload: version, the PKCS#8 key's length (two
// bytes, big endian), the key, then the certificate, all DER.
func encodeCachedKey(k unlockedKey) ([]byte, error) {
	key, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		return nil, fmt.Errorf("marshal key for the key cache: %w", err)
	}
	if len(key) > 0xffff {
		return nil, errors.New("marshal key for the key cache: key too long")
	}
	p := make([]byte, 0, 3+len(key)+len(k.cert))
	p = append(p, keyCacheVersion)
	p = binary.BigEndian.AppendUint16(p, uint16(len(key)))
	p = append(p, key...)
	return append(p, k.cert...), nil
}

// decodeCachedKey reverses encodeCachedKey and checks, as pki.DecodeBundle
// does, that the key is P-256 and the certificate's. It reads only the
// certificate's public key (the cache wrote a certificate the bundle
// held), which spares the client a full x509 parse.
func decodeCachedKey(p []byte) (unlockedKey, error) {
	if len(p) < 3 || p[0] != keyCacheVersion {
		return unlockedKey{}, errors.New("cached key: unknown format")
	}
	n := int(binary.BigEndian.Uint16(p[1:3]))
	if len(p) < 3+n {
		return unlockedKey{}, errors.New("cached key: truncated")
	}
	k, err := x509.ParsePKCS8PrivateKey(p[3 : 3+n])
	if err != nil {
		return unlockedKey{}, fmt.Errorf("cached key: %w", err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve.Params().Name != "P-256" {
		return unlockedKey{}, errors.New("cached key: not P-256 ECDSA")
	}
	cert := p[3+n:]
	pub, err := pki.CertificatePublicKey(cert)
	if err != nil {
		return unlockedKey{}, fmt.Errorf("cached key: certificate: %w", err)
	}
	if !key.PublicKey.Equal(pub) {
		return unlockedKey{}, errors.New("cached key: key does not match the certificate")
	}
	return unlockedKey{key: key, cert: cert}, nil
}

// loadKeyCached reads the bundle at path and returns its key and
// certificate from the key cache when an entry for these bytes and this
// password lives; otherwise it decodes the bundle (paying the password
// derivation) and, on success, stores it for ttl. Errors are those of
// pki.LoadBundle; a cache that fails is only a miss.
func loadKeyCached(kr keyring, path, password string, ttl time.Duration) (unlockedKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return unlockedKey{}, fmt.Errorf("load bundle %s: %w", path, err)
	}
	desc := keyCacheDesc(data, password)
	if p, ok := kr.get(desc); ok {
		if k, err := decodeCachedKey(p); err == nil {
			return k, nil
		}
	}
	b, err := pki.DecodeBundle(data, password)
	if err != nil {
		return unlockedKey{}, fmt.Errorf("load bundle %s: %w", path, err)
	}
	k := unlockedKey{key: b.Key, cert: b.Cert.Raw}
	if p, err := encodeCachedKey(k); err == nil {
		kr.put(desc, p, ttl)
	}
	return k, nil
}
