package knock

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"sknock/packet"
)

// Datagram layout of wire format v2.0.0 (PROTOCOL-v2.md, "Datagram").
const (
	// V2Major is the major version of wire format v2; v2.0.0 is the only
	// v2 version a server knows.
	V2Major = 2
	// EncSize is the size of HPKE's encapsulated key (an uncompressed
	// P-256 point) that follows the header.
	EncSize = 65
	// MAC1Size is the size of the mac1 that ends a v2 datagram.
	MAC1Size = 16
	// MaxDatagramSizeV2 is the largest v2 datagram (never fragmented on
	// a 1280-byte IPv6 path).
	MaxDatagramSizeV2 = 1232
	// MinDatagramSizeV2 is the smallest v2 datagram: header, enc, AEAD
	// tag, mac1, the fixed plaintext and the shortest signature.
	MinDatagramSizeV2 = 128
	// MaxRequests is how many (protocol, port) requests one v2 knock
	// carries at most.
	MaxRequests = 16
	// MaxChainCertificates is the client certificate and at most two
	// intermediates.
	MaxChainCertificates = 3

	headerSize = 4
	offEnc     = headerSize
	offCT      = offEnc + EncSize
	aeadTag    = 16
	minSigSize = 8
)

// Plaintext layout of v2 (PROTOCOL-v2.md, "Plaintext"): fixed fields,
// then variable ones.
const (
	v2TimestampSize = 8
	v2FamilySize    = 1
	v2CountSize     = 1
	v2RequestSize   = 3
	v2ChainLenSize  = 2
)

// Domain-separation strings of v2.
const (
	mac1Label      = "sknock knock v2 mac1"
	infoLabel      = "sknock knock v2"
	signatureLabel = "sknock knock v2 signature"
)

// Errors of v2 beyond those v1 shares (ErrTooShort, ErrProtocolID,
// ErrVersion, ErrPublicKey, ErrInvalidArgument).
var (
	ErrTooLong   = errors.New("knock: datagram longer than 1232 bytes")
	ErrMAC1      = errors.New("knock: mac1 wrong (not made for this server's certificate)")
	ErrDecrypt   = errors.New("knock: HPKE open failed (wrong key or corrupted)")
	ErrFamily    = errors.New("knock: address family neither 4 nor 6")
	ErrRequests  = errors.New("knock: bad request list")
	ErrChain     = errors.New("knock: chain is not 1 to 3 whole DER certificates")
	ErrTimestamp = errors.New("knock: timestamp not below 2^63")
	ErrLayout    = errors.New("knock: plaintext does not parse")
)

// Request is one protocol and port a v2 knock asks to open; the wire
// carries the protocol as its IP number, as packet.Proto does.
type Request struct {
	Proto packet.Proto
	Port  uint16
}

// KnockV2 is the content of a v2 knock.
type KnockV2 struct {
	// TimestampMillis is the client's clock when it sealed the knock, in
	// Unix milliseconds.
	TimestampMillis uint64
	// ClientIP is the address the client says it sends from; its family
	// is the plaintext's family field.
	ClientIP netip.Addr
	// Requests are what the client asks to open, 1 to MaxRequests, none
	// twice.
	Requests []Request
	// Chain is the client certificate, then its intermediates, each the
	// issuer of the one before, DER.
	Chain [][]byte
	// Signature is the ASN.1 DER ECDSA-SHA256 signature.
	Signature []byte
	// Digest is the SHA-256 of the message the signature covers
	// (PROTOCOL-v2.md): label, H(SPKI), header, enc and the plaintext up
	// to the signature. Filled by OpenV2 and SealV2.
	Digest [sha256.Size]byte
	// Enc is the datagram's encapsulated key (aliases the datagram).
	Enc []byte
}

// Time returns the timestamp as a time.Time.
func (k *KnockV2) Time() time.Time { return time.UnixMilli(int64(k.TimestampMillis)) }

// VerifySignature reports whether k's signature is valid under pub.
func (k *KnockV2) VerifySignature(pub *ecdsa.PublicKey) bool {
	return ecdsa.VerifyASN1(pub, k.Digest[:], k.Signature)
}

// Target is a server as v2 sees it, derived from its certificate's
// SubjectPublicKeyInfo: the key knocks are sealed to, mac1's key and
// HPKE's info. It is immutable; derive it once per server certificate.
type Target struct {
	spkiHash [sha256.Size]byte
	// ipad and opad are HMAC's padded keys for K_mac1 (RFC 2104), kept so
	// that mac1 is two SHA-256 sums over stack buffers: no allocation.
	ipad, opad [sha256.BlockSize]byte
	info       []byte
	pub        *ecdh.PublicKey
}

// NewTarget derives the Target of the server certificate whose DER
// SubjectPublicKeyInfo is spki (x509.Certificate.RawSubjectPublicKeyInfo);
// its key must be P-256.
func NewTarget(spki []byte) (*Target, error) {
	parsed, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return nil, fmt.Errorf("knock: server public key: %w", err)
	}
	pk, ok := parsed.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: server key is not ECDSA", ErrInvalidArgument)
	}
	pub, err := pk.ECDH()
	if err != nil || pub.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("%w: server key is not P-256", ErrInvalidArgument)
	}
	t := &Target{pub: pub, spkiHash: sha256.Sum256(spki)}
	macKey := sha256.Sum256(append([]byte(mac1Label), spki...))
	for i := range t.ipad {
		t.ipad[i], t.opad[i] = 0x36, 0x5c
	}
	for i, c := range macKey {
		t.ipad[i] ^= c
		t.opad[i] ^= c
	}
	t.info = append([]byte(infoLabel), t.spkiHash[:]...)
	return t, nil
}

// PublicKey returns the server key knocks are sealed to.
func (t *Target) PublicKey() *ecdh.PublicKey { return t.pub }

// mac1 computes HMAC-SHA256(K_mac1, body) into out (the first MAC1Size
// bytes are mac1). body is at most MaxDatagramSizeV2 bytes; a longer one
// gets a zero MAC, which no datagram carries by chance.
func (t *Target) mac1(body []byte, out *[sha256.Size]byte) {
	var inner [sha256.BlockSize + MaxDatagramSizeV2]byte
	if len(body) > MaxDatagramSizeV2 {
		*out = [sha256.Size]byte{}
		return
	}
	copy(inner[:], t.ipad[:])
	n := copy(inner[sha256.BlockSize:], body)
	innerSum := sha256.Sum256(inner[:sha256.BlockSize+n])
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(outer[:], t.opad[:])
	copy(outer[sha256.BlockSize:], innerSum[:])
	*out = sha256.Sum256(outer[:])
}

// CheckMAC1 reports whether datagram ends in the mac1 this server's
// certificate gives it. It costs one HMAC and no public-key operation;
// the envelope (CheckEnvelopeV2) is checked first.
func (t *Target) CheckMAC1(datagram []byte) bool {
	if len(datagram) < MAC1Size {
		return false
	}
	body := datagram[:len(datagram)-MAC1Size]
	var sum [sha256.Size]byte
	t.mac1(body, &sum)
	return subtle.ConstantTimeCompare(sum[:MAC1Size], datagram[len(body):]) == 1
}

// Version returns the major wire version a datagram claims: 1, 2, or 0
// for none this package reads (not 'a', too short to say, or a v2 other
// than 2.0.0). It checks nothing else.
func Version(datagram []byte) int {
	if len(datagram) < headerSize || datagram[offProtocolID] != ProtocolID {
		return 0
	}
	switch v := datagram[offVersion : offVersion+3]; {
	case v[0] == VersionMajor:
		return 1
	case v[0] == V2Major && v[1] == 0 && v[2] == 0:
		return 2
	}
	return 0
}

// ValidEnvelopeV2 reports whether CheckEnvelopeV2 passes, without
// allocating: for a server's first look at every datagram.
func ValidEnvelopeV2(datagram []byte) bool {
	n := len(datagram)
	return n >= MinDatagramSizeV2 && n <= MaxDatagramSizeV2 && Version(datagram) == 2
}

// CheckEnvelopeV2 makes step 1 of PROTOCOL-v2.md: the size, the protocol
// id and the version 2.0.0.
func CheckEnvelopeV2(datagram []byte) error {
	switch n := len(datagram); {
	case n < MinDatagramSizeV2:
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrTooShort, n, MinDatagramSizeV2)
	case n > MaxDatagramSizeV2:
		return fmt.Errorf("%w: %d bytes", ErrTooLong, n)
	}
	if datagram[offProtocolID] != ProtocolID {
		return ErrProtocolID
	}
	if v := datagram[offVersion : offVersion+3]; v[0] != V2Major || v[1] != 0 || v[2] != 0 {
		return fmt.Errorf("%w: %d.%d.%d", ErrVersion, v[0], v[1], v[2])
	}
	return nil
}

// EncOf returns a v2 datagram's encapsulated key (aliasing it), or nil
// when it is too short to hold one.
func EncOf(datagram []byte) []byte {
	if len(datagram) < offCT {
		return nil
	}
	return datagram[offEnc:offCT]
}

// Opener opens v2 knocks for one server: its Target and private key.
type Opener struct {
	*Target
	key ecdh.KeyExchanger
}

// NewOpener returns the Opener of the server certificate whose
// SubjectPublicKeyInfo is spki, with its private key priv (which must
// match).
func NewOpener(spki []byte, priv ecdh.KeyExchanger) (*Opener, error) {
	t, err := NewTarget(spki)
	if err != nil {
		return nil, err
	}
	if priv == nil || !priv.PublicKey().Equal(t.pub) {
		return nil, fmt.Errorf("%w: the private key does not match the certificate", ErrInvalidArgument)
	}
	return &Opener{Target: t, key: priv}, nil
}

// Key returns the server's private key.
func (o *Opener) Key() ecdh.KeyExchanger { return o.key }

// OpenV2 makes steps 1, 2, 4 and 5 of PROTOCOL-v2.md on datagram: the
// envelope, mac1, the HPKE open and the plaintext's layout. Step 3 (the
// replay memory, between mac1 and the ECDH) is the server's, which calls
// CheckEnvelopeV2 and CheckMAC1 first. The returned knock aliases a fresh
// plaintext buffer and, for Enc, the datagram. It never panics.
func (o *Opener) OpenV2(datagram []byte) (*KnockV2, error) {
	return o.OpenV2With(datagram, o.key)
}

// OpenV2With is OpenV2 with the key exchange left to kx, which must be
// the server's key (a server may remember shared secrets per
// encapsulated key).
func (o *Opener) OpenV2With(datagram []byte, kx ecdh.KeyExchanger) (*KnockV2, error) {
	if err := CheckEnvelopeV2(datagram); err != nil {
		return nil, err
	}
	if !o.CheckMAC1(datagram) {
		return nil, ErrMAC1
	}
	return o.OpenV2AfterMAC1(datagram, kx)
}

// OpenV2AfterMAC1 is OpenV2With for a server that made steps 1 and 2
// itself (CheckEnvelopeV2 or ValidEnvelopeV2, then CheckMAC1) on
// datagram: it makes steps 4 and 5 only. Given a datagram whose envelope
// is not good it returns an error; it never panics.
func (o *Opener) OpenV2AfterMAC1(datagram []byte, kx ecdh.KeyExchanger) (*KnockV2, error) {
	if !ValidEnvelopeV2(datagram) {
		return nil, CheckEnvelopeV2(datagram)
	}
	kem, err := hpke.NewDHKEMPrivateKey(kx)
	if err != nil {
		return nil, fmt.Errorf("knock: %w", err)
	}
	header := datagram[:headerSize]
	enc := datagram[offEnc:offCT]
	ct := datagram[offCT : len(datagram)-MAC1Size]
	r, err := hpke.NewRecipient(enc, kem, hpke.HKDFSHA256(), hpke.AES128GCM(), o.info)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPublicKey, err)
	}
	plain, err := r.Open(header, ct)
	if err != nil {
		return nil, ErrDecrypt
	}
	k, err := ParsePlaintextV2(plain)
	if err != nil {
		return nil, err
	}
	k.Enc = enc
	k.Digest = o.digest(header, enc, plain[:len(plain)-len(k.Signature)])
	return k, nil
}

// digest hashes the message a v2 signature covers.
func (t *Target) digest(header, enc, signed []byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(signatureLabel))
	h.Write(t.spkiHash[:])
	h.Write(header)
	h.Write(enc)
	h.Write(signed)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// ParsePlaintextV2 parses a v2 plaintext exactly (PROTOCOL-v2.md,
// "Plaintext"). The chain is split into whole DER elements, not parsed
// as certificates; Digest and Enc are left zero. The knock aliases
// plain.
func ParsePlaintextV2(plain []byte) (*KnockV2, error) {
	p := plain
	take := func(n int) []byte {
		if n > len(p) {
			return nil
		}
		b := p[:n]
		p = p[n:]
		return b
	}
	ts := take(v2TimestampSize)
	fam := take(v2FamilySize)
	if ts == nil || fam == nil {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooShort, len(plain))
	}
	k := &KnockV2{TimestampMillis: binary.BigEndian.Uint64(ts)}
	if k.TimestampMillis >= 1<<63 {
		return nil, ErrTimestamp
	}
	switch fam[0] {
	case 4:
		ip := take(4)
		if ip == nil {
			return nil, fmt.Errorf("%w: no client address", ErrTooShort)
		}
		k.ClientIP = netip.AddrFrom4([4]byte(ip))
	case 6:
		ip := take(16)
		if ip == nil {
			return nil, fmt.Errorf("%w: no client address", ErrTooShort)
		}
		k.ClientIP = netip.AddrFrom16([16]byte(ip))
	default:
		return nil, fmt.Errorf("%w: %d", ErrFamily, fam[0])
	}
	count := take(v2CountSize)
	if count == nil || count[0] < 1 || count[0] > MaxRequests {
		return nil, fmt.Errorf("%w: count out of 1–%d", ErrRequests, MaxRequests)
	}
	reqs := take(int(count[0]) * v2RequestSize)
	if reqs == nil {
		return nil, fmt.Errorf("%w: %d requests do not fit", ErrTooShort, count[0])
	}
	k.Requests = make([]Request, 0, count[0])
	for i := 0; i < len(reqs); i += v2RequestSize {
		r := Request{Proto: packet.Proto(reqs[i]), Port: binary.BigEndian.Uint16(reqs[i+1:])}
		if !r.Proto.Valid() {
			return nil, fmt.Errorf("%w: protocol %d", ErrRequests, r.Proto)
		}
		if r.Port == 0 {
			return nil, fmt.Errorf("%w: port 0", ErrRequests)
		}
		for _, prev := range k.Requests {
			if prev == r {
				return nil, fmt.Errorf("%w: %d/%d twice", ErrRequests, r.Proto, r.Port)
			}
		}
		k.Requests = append(k.Requests, r)
	}
	l := take(v2ChainLenSize)
	if l == nil {
		return nil, fmt.Errorf("%w: no chain length", ErrTooShort)
	}
	chain := take(int(binary.BigEndian.Uint16(l)))
	if chain == nil {
		return nil, fmt.Errorf("%w: chain longer than the plaintext", ErrTooShort)
	}
	var err error
	if k.Chain, err = splitDER(chain); err != nil {
		return nil, err
	}
	if n := len(p); n < minSigSize || n > MaxSignatureSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrSignatureSize, n)
	}
	k.Signature = p
	return k, nil
}

// splitDER splits chain into 1 to MaxChainCertificates DER SEQUENCEs with
// minimal definite lengths that fill it exactly.
func splitDER(chain []byte) ([][]byte, error) {
	var out [][]byte
	for len(chain) > 0 {
		n, ok := derSequenceLen(chain)
		if !ok || len(out) == MaxChainCertificates {
			return nil, ErrChain
		}
		out = append(out, chain[:n])
		chain = chain[n:]
	}
	if len(out) == 0 {
		return nil, ErrChain
	}
	return out, nil
}

// derSequenceLen returns the length of the DER SEQUENCE at the start of b,
// header included, when its length is definite, minimal and within b.
func derSequenceLen(b []byte) (int, bool) {
	if len(b) < 2 || b[0] != 0x30 {
		return 0, false
	}
	if b[1] < 0x80 {
		n := 2 + int(b[1])
		return n, n <= len(b)
	}
	octets := int(b[1] & 0x7f)
	if octets == 0 || octets > 2 || len(b) < 2+octets || b[2] == 0 {
		return 0, false // indefinite, too long for a datagram, or not minimal
	}
	body := 0
	for _, c := range b[2 : 2+octets] {
		body = body<<8 | int(c)
	}
	if body < 0x80 || octets == 2 && body < 0x100 {
		return 0, false // not minimal
	}
	n := 2 + octets + body
	return n, n <= len(b)
}

// SealV2 builds the v2 datagram for k to the server t, signed with the
// client's key (P-256). k's Digest, Signature and Enc are ignored and
// filled in. rnd supplies the signature nonce (nil: crypto/rand); HPKE
// draws its ephemeral key from crypto/rand.
func SealV2(k *KnockV2, client *ecdsa.PrivateKey, t *Target, rnd io.Reader) ([]byte, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	plain, err := marshalPlaintextV2(k)
	if err != nil {
		return nil, err
	}
	if client == nil || t == nil {
		return nil, fmt.Errorf("%w: need a client key and a server", ErrInvalidArgument)
	}
	pub, err := hpke.NewDHKEMPublicKey(t.pub)
	if err != nil {
		return nil, fmt.Errorf("knock: %w", err)
	}
	enc, sender, err := hpke.NewSender(pub, hpke.HKDFSHA256(), hpke.AES128GCM(), t.info)
	if err != nil {
		return nil, fmt.Errorf("knock: HPKE sender: %w", err)
	}
	header := []byte{ProtocolID, V2Major, 0, 0}
	k.Digest = t.digest(header, enc, plain)
	sig, err := ecdsa.SignASN1(rnd, client, k.Digest[:])
	if err != nil {
		return nil, fmt.Errorf("knock: sign: %w", err)
	}
	if len(sig) < minSigSize || len(sig) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes (key not P-256?)", ErrInvalidArgument, len(sig))
	}
	plain = append(plain, sig...)
	size := headerSize + EncSize + len(plain) + aeadTag + MAC1Size
	if size > MaxDatagramSizeV2 {
		return nil, fmt.Errorf("%w: the knock would be %d bytes, at most %d fit (a shorter chain?)", ErrInvalidArgument, size, MaxDatagramSizeV2)
	}
	out := make([]byte, 0, size)
	out = append(out, header...)
	out = append(out, enc...)
	ct, err := sender.Seal(header, plain)
	if err != nil {
		return nil, fmt.Errorf("knock: HPKE seal: %w", err)
	}
	out = append(out, ct...)
	var sum [sha256.Size]byte
	t.mac1(out, &sum)
	out = append(out, sum[:MAC1Size]...)
	k.Signature = sig
	k.Enc = out[offEnc:offCT]
	return out, nil
}

// marshalPlaintextV2 writes k's plaintext up to the signature, checking
// what ParsePlaintextV2 checks.
func marshalPlaintextV2(k *KnockV2) ([]byte, error) {
	if k.TimestampMillis >= 1<<63 {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, ErrTimestamp)
	}
	if !k.ClientIP.IsValid() {
		return nil, fmt.Errorf("%w: no client address", ErrInvalidArgument)
	}
	if n := len(k.Requests); n < 1 || n > MaxRequests {
		return nil, fmt.Errorf("%w: %d requests, want 1 to %d", ErrInvalidArgument, n, MaxRequests)
	}
	if n := len(k.Chain); n < 1 || n > MaxChainCertificates {
		return nil, fmt.Errorf("%w: chain of %d certificates, want 1 to %d", ErrInvalidArgument, n, MaxChainCertificates)
	}
	out := binary.BigEndian.AppendUint64(nil, k.TimestampMillis)
	if ip := k.ClientIP.Unmap(); ip.Is4() {
		a := ip.As4()
		out = append(append(out, 4), a[:]...)
	} else {
		a := ip.As16()
		out = append(append(out, 6), a[:]...)
	}
	out = append(out, byte(len(k.Requests)))
	for i, r := range k.Requests {
		if !r.Proto.Valid() || r.Port == 0 {
			return nil, fmt.Errorf("%w: request %d/%d", ErrInvalidArgument, r.Proto, r.Port)
		}
		for _, prev := range k.Requests[:i] {
			if prev == r {
				return nil, fmt.Errorf("%w: request %d/%d twice", ErrInvalidArgument, r.Proto, r.Port)
			}
		}
		out = append(out, byte(r.Proto))
		out = binary.BigEndian.AppendUint16(out, r.Port)
	}
	var chain []byte
	for _, der := range k.Chain {
		if n, ok := derSequenceLen(der); !ok || n != len(der) {
			return nil, fmt.Errorf("%w: a chain certificate is not one DER SEQUENCE", ErrInvalidArgument)
		}
		chain = append(chain, der...)
	}
	if len(chain) > 0xffff {
		return nil, fmt.Errorf("%w: chain of %d bytes", ErrInvalidArgument, len(chain))
	}
	out = binary.BigEndian.AppendUint16(out, uint16(len(chain)))
	return append(out, chain...), nil
}
