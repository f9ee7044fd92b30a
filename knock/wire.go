package knock

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sknock/packet"
	"time"
)

// Datagram layout (PROTOCOL.md, "Datagram").
const (
	offProtocolID = 0 // ASCII 'a'
	offVersion    = 1 // major, minor, patch
	offCiphertext = 4

	// ProtocolID is the first byte of every knock.
	ProtocolID = 'a'
	// VersionMajor, VersionMinor and VersionPatch are the newest wire
	// version this package knows and the one it seals.
	VersionMajor, VersionMinor, VersionPatch = 1, 0, 0

	// PublicKeySize is the size of the uncompressed ephemeral P-256 point
	// that ends every datagram.
	PublicKeySize = 65
	blockSize     = aes.BlockSize
	keySize       = 16
)

// Plaintext layout (PROTOCOL.md, "Plaintext").
const (
	offReserved    = 0
	offProto       = 1
	offPort        = 2
	offClientIP    = 4
	offTimestamp   = 20
	offCertificate = 24

	clientIPSize = 16
	// MaxSignatureSize is the largest ASN.1 DER ECDSA P-256 signature, and
	// the size of the signature slot at the end of the plaintext.
	MaxSignatureSize = 72
	// trailerSize is the signature length byte plus its slot.
	trailerSize = 1 + MaxSignatureSize
)

// MinDatagramSize is the smallest datagram that can be a knock: header,
// one padded block holding an empty-certificate plaintext, and the key.
// Real knocks carry a certificate and are several hundred bytes long.
const MinDatagramSize = offCiphertext + (offCertificate+trailerSize+blockSize)/blockSize*blockSize + PublicKeySize

// salt is the HKDF salt of PROTOCOL.md, used as its ASCII bytes (it is
// hex text, but it is not hex-decoded).
var salt = []byte("54686579206c6976696e272069742075702061742074686520486f74656c" +
	"2043616c69666f726e69610a576861742061206e69636520737572707269" +
	"73652028776861742061206e696365207375727072697365290a4272696e" +
	"6720796f757220616c69626973")

// HKDF info strings for the AES key and IV.
const (
	infoKey = "knock"
	infoIV  = "iv0AES128CBC"
)

// Errors Open returns, one per way a datagram can be bad. Callers test
// them with errors.Is; the returned error may add detail.
var (
	ErrTooShort        = errors.New("knock: datagram too short")
	ErrProtocolID      = errors.New("knock: not an sKnock datagram (protocol id)")
	ErrVersion         = errors.New("knock: unsupported version")
	ErrCiphertextSize  = errors.New("knock: ciphertext not a multiple of the block size")
	ErrPublicKey       = errors.New("knock: invalid ephemeral public key")
	ErrPadding         = errors.New("knock: bad padding (wrong key or corrupted)")
	ErrReserved        = errors.New("knock: reserved byte not zero")
	ErrProto           = errors.New("knock: requested protocol is neither TCP nor UDP")
	ErrSignatureSize   = errors.New("knock: bad signature length")
	ErrSignaturePad    = errors.New("knock: signature padding not zero")
	ErrNoCertificate   = errors.New("knock: no certificate")
	ErrClientIP        = errors.New("knock: IPv4 client address with non-zero padding")
	ErrInvalidArgument = errors.New("knock: invalid argument")
)

// Knock is the content of one knock.
type Knock struct {
	// Proto and Port are what the client asks to open.
	Proto packet.Proto
	Port  uint16
	// ClientIP is the address the client says it sends from; the server
	// compares it with the datagram's source.
	ClientIP netip.Addr
	// Timestamp is the client's clock when it sealed the knock, in Unix
	// seconds.
	Timestamp uint32
	// Certificate is the client's X.509 certificate, DER.
	Certificate []byte
	// Signature is the ASN.1 DER ECDSA-SHA256 signature over Signed.
	Signature []byte
	// Signed is the plaintext the signature covers: bytes [0, 24+C).
	Signed []byte
}

// Time returns Timestamp as a time.Time.
func (k *Knock) Time() time.Time { return time.Unix(int64(k.Timestamp), 0) }

// deriveKeys turns the ECDH shared secret (the X coordinate) into the AES
// key and IV.
func deriveKeys(secret []byte) (key, iv []byte, err error) {
	key, err = hkdf.Key(sha256.New, secret, salt, infoKey, keySize)
	if err != nil {
		return nil, nil, err
	}
	iv, err = hkdf.Key(sha256.New, secret, salt, infoIV, blockSize)
	return key, iv, err
}

// Open decrypts datagram with the server's key and returns its content.
// ipv6 says whether the datagram arrived over IPv6, which decides how the
// embedded client address is read. The returned Knock aliases a fresh
// buffer, never datagram. Open checks the envelope and layout only; it
// never panics, whatever the input.
func Open(datagram []byte, server *ecdh.PrivateKey, ipv6 bool) (*Knock, error) {
	return OpenWith(datagram, ECDHWith(server), ipv6)
}

// SharedSecret returns the ECDH shared secret of the server's key and a
// datagram's ephemeral public key, given as its bytes (EphemeralKey), or
// an error when they are no valid key. A server may remember it per
// ephemeral key and spare the key's validation and the ECDH.
type SharedSecret func(ephemeral []byte) ([]byte, error)

// ECDHWith returns the SharedSecret that does the ECDH with server's key
// every time.
func ECDHWith(server *ecdh.PrivateKey) SharedSecret {
	return func(ephemeral []byte) ([]byte, error) {
		peer, err := ecdh.P256().NewPublicKey(ephemeral)
		if err != nil {
			return nil, err
		}
		return server.ECDH(peer)
	}
}

// EphemeralKey returns the bytes of a datagram's ephemeral public key (an
// uncompressed P-256 point, not yet checked), or nil when the datagram is
// too short to hold one. It aliases datagram.
func EphemeralKey(datagram []byte) []byte {
	if len(datagram) < PublicKeySize {
		return nil
	}
	return datagram[len(datagram)-PublicKeySize:]
}

// OpenWith is Open with the ECDH left to secret, so that a server can
// remember shared secrets per ephemeral key.
func OpenWith(datagram []byte, secret SharedSecret, ipv6 bool) (*Knock, error) {
	if err := CheckEnvelope(datagram); err != nil {
		return nil, err
	}
	ciphertext := datagram[offCiphertext : len(datagram)-PublicKeySize]
	shared, err := secret(EphemeralKey(datagram))
	if err != nil {
		return nil, ErrPublicKey
	}
	key, iv, err := deriveKeys(shared)
	if err != nil {
		return nil, fmt.Errorf("knock: derive keys: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("knock: %w", err)
	}
	plain := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ciphertext)
	plain, err = unpad(plain)
	if err != nil {
		return nil, err
	}
	return parsePlaintext(plain, ipv6)
}

// CheckEnvelope makes the checks of a datagram that need no key: size,
// protocol id, version and ciphertext length. Open makes them first; a
// server may make them before anything costlier.
func CheckEnvelope(datagram []byte) error {
	if len(datagram) < MinDatagramSize {
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrTooShort, len(datagram), MinDatagramSize)
	}
	if datagram[offProtocolID] != ProtocolID {
		return ErrProtocolID
	}
	if v := datagram[offVersion : offVersion+3]; !knownVersion(v[0], v[1], v[2]) {
		return fmt.Errorf("%w: %d.%d.%d", ErrVersion, v[0], v[1], v[2])
	}
	if n := len(datagram) - offCiphertext - PublicKeySize; n%blockSize != 0 {
		return fmt.Errorf("%w: %d bytes", ErrCiphertextSize, n)
	}
	return nil
}

// knownVersion reports whether major.minor.patch is a version this package
// reads: major 1 (there never was a major 0 on the wire) and nothing newer
// than 1.0.0.
func knownVersion(major, minor, patch byte) bool {
	if major != VersionMajor {
		return false
	}
	if minor != VersionMinor {
		return minor < VersionMinor
	}
	return patch <= VersionPatch
}

// unpad strips PKCS#7 padding in constant time with respect to the padding
// bytes' values.
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, ErrPadding
	}
	n := int(b[len(b)-1])
	if n == 0 || n > blockSize || n > len(b) {
		return nil, ErrPadding
	}
	var bad byte
	for _, c := range b[len(b)-n:] {
		bad |= c ^ byte(n)
	}
	if bad != 0 {
		return nil, ErrPadding
	}
	return b[:len(b)-n], nil
}

// parsePlaintext checks the plaintext layout and slices it into a Knock.
func parsePlaintext(plain []byte, ipv6 bool) (*Knock, error) {
	if len(plain) < offCertificate+trailerSize {
		return nil, fmt.Errorf("%w: plaintext of %d bytes", ErrTooShort, len(plain))
	}
	if plain[offReserved] != 0 {
		return nil, ErrReserved
	}
	proto, ok := ProtoFromWire(plain[offProto])
	if !ok {
		return nil, fmt.Errorf("%w: %d", ErrProto, plain[offProto])
	}
	k := &Knock{
		Proto:     proto,
		Port:      binary.BigEndian.Uint16(plain[offPort:]),
		Timestamp: binary.BigEndian.Uint32(plain[offTimestamp:]),
	}
	ip := plain[offClientIP : offClientIP+clientIPSize]
	if ipv6 {
		k.ClientIP = netip.AddrFrom16([16]byte(ip))
	} else {
		for _, c := range ip[4:] {
			if c != 0 {
				return nil, ErrClientIP
			}
		}
		k.ClientIP = netip.AddrFrom4([4]byte(ip[:4]))
	}
	trailer := plain[len(plain)-trailerSize:]
	sigLen := int(trailer[0])
	if sigLen == 0 || sigLen > MaxSignatureSize {
		return nil, fmt.Errorf("%w: %d", ErrSignatureSize, sigLen)
	}
	for _, c := range trailer[1 : 1+MaxSignatureSize-sigLen] {
		if c != 0 {
			return nil, ErrSignaturePad
		}
	}
	k.Signature = trailer[1+MaxSignatureSize-sigLen:]
	k.Signed = plain[:len(plain)-trailerSize]
	k.Certificate = k.Signed[offCertificate:]
	if len(k.Certificate) == 0 {
		return nil, ErrNoCertificate
	}
	return k, nil
}

// Seal builds the datagram for k, signed with the client's key and
// encrypted to the server's public key (from the server's certificate).
// k's Signature and Signed are ignored and filled in. rand supplies the
// ephemeral key and signature nonce; nil means crypto/rand.
func Seal(k *Knock, client *ecdsa.PrivateKey, server *ecdh.PublicKey, rnd io.Reader) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	wireProto, ok := WireProto(k.Proto)
	if !ok {
		return nil, fmt.Errorf("%w: protocol %d", ErrInvalidArgument, uint8(k.Proto))
	}
	if !k.ClientIP.IsValid() {
		return nil, fmt.Errorf("%w: no client address", ErrInvalidArgument)
	}
	if len(k.Certificate) == 0 {
		return nil, fmt.Errorf("%w: no certificate", ErrInvalidArgument)
	}
	if client == nil || server == nil || server.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("%w: need a client key and a P-256 server key", ErrInvalidArgument)
	}

	signed := make([]byte, offCertificate+len(k.Certificate))
	signed[offProto] = wireProto
	binary.BigEndian.PutUint16(signed[offPort:], k.Port)
	ip := k.ClientIP.Unmap()
	if ip.Is4() {
		a := ip.As4()
		copy(signed[offClientIP:], a[:])
	} else {
		a := ip.As16()
		copy(signed[offClientIP:], a[:])
	}
	binary.BigEndian.PutUint32(signed[offTimestamp:], k.Timestamp)
	copy(signed[offCertificate:], k.Certificate)

	digest := sha256.Sum256(signed)
	sig, err := ecdsa.SignASN1(rnd, client, digest[:])
	if err != nil {
		return nil, fmt.Errorf("knock: sign: %w", err)
	}
	if len(sig) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes (key not P-256?)", ErrInvalidArgument, len(sig))
	}

	plainLen := len(signed) + trailerSize
	padLen := blockSize - plainLen%blockSize
	plain := make([]byte, plainLen+padLen)
	copy(plain, signed)
	trailer := plain[len(signed) : len(signed)+trailerSize]
	trailer[0] = byte(len(sig))
	copy(trailer[1+MaxSignatureSize-len(sig):], sig)
	for i := plainLen; i < len(plain); i++ {
		plain[i] = byte(padLen)
	}

	eph, err := ecdh.P256().GenerateKey(rnd)
	if err != nil {
		return nil, fmt.Errorf("knock: ephemeral key: %w", err)
	}
	secret, err := eph.ECDH(server)
	if err != nil {
		return nil, fmt.Errorf("knock: ECDH: %w", err)
	}
	key, iv, err := deriveKeys(secret)
	if err != nil {
		return nil, fmt.Errorf("knock: derive keys: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("knock: %w", err)
	}

	out := make([]byte, offCiphertext+len(plain)+PublicKeySize)
	out[offProtocolID] = ProtocolID
	out[offVersion], out[offVersion+1], out[offVersion+2] = VersionMajor, VersionMinor, VersionPatch
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out[offCiphertext:offCiphertext+len(plain)], plain)
	copy(out[offCiphertext+len(plain):], eph.PublicKey().Bytes())

	k.Signed = plain[:len(signed)]
	k.Signature = sig
	return out, nil
}

// VerifySignature reports whether k's signature is valid under pub.
func (k *Knock) VerifySignature(pub *ecdsa.PublicKey) bool {
	digest := sha256.Sum256(k.Signed)
	return ecdsa.VerifyASN1(pub, digest[:], k.Signature)
}
