package gate

import (
	"crypto/ecdh"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"sknock/knock"
	"sknock/pki"
)

// Trust is everything a knock is checked against. It is immutable: a
// reload (new CRL, new CA) builds a new Trust and swaps it in whole.
type Trust struct {
	// ServerKey decrypts knocks; it belongs to the certificate clients
	// encrypt to.
	ServerKey *ecdh.PrivateKey
	// Verifier holds the CA certificates and the CRL.
	Verifier *pki.Verifier
	// Tolerance is how far a knock's timestamp may be from the clock,
	// either way (the original's TIMESTAMP_THRESHOLD, 7 s).
	Tolerance time.Duration
	// Opener opens v2 knocks: the server certificate's mac1 key and HPKE
	// context with ServerKey. Nil: v2 knocks are refused as untrusted.
	Opener *knock.Opener
}

// NewTrust builds the trust state from the server's bundle (its key
// decrypts knocks), the CAs that issue client certificates and their CRL
// (nil: nothing revoked). sknockd and `sknock inspect` both build theirs
// here, so they decide alike.
func NewTrust(server *pki.Bundle, cas []*x509.Certificate, crl *pki.CRL, tolerance time.Duration) (*Trust, error) {
	key, err := server.ECDHKey()
	if err != nil {
		return nil, err
	}
	if len(cas) == 0 {
		return nil, errors.New("no CA certificate to check client certificates against")
	}
	opener, err := knock.NewOpener(server.Cert.RawSubjectPublicKeyInfo, key)
	if err != nil {
		return nil, fmt.Errorf("server certificate for knock v2: %w", err)
	}
	return &Trust{ServerKey: key, Verifier: pki.NewVerifier(cas, crl), Tolerance: tolerance, Opener: opener}, nil
}

// Input is one knock to decide.
type Input struct {
	// Datagram is the UDP payload as received.
	Datagram []byte
	// Source is the datagram's source address; its family also decides
	// how the embedded client address is read.
	Source netip.Addr
	// Now is the arrival time: the timestamp window and the replay
	// window are measured from it.
	Now time.Time
	// CertTime is the instant at which the certificate and its CA must
	// be valid. Zero means Now, which is what the gatekeeper uses;
	// `sknock inspect --at` sets Now to judge an old capture and keeps
	// CertTime at the real time.
	CertTime time.Time
}

// Decision is the outcome of a knock.
type Decision struct {
	// Reason is ReasonNone for a grant.
	Reason Reason
	// Err says in words what failed; nil for a grant.
	Err error
	// Grant is what a granted knock opens (for v2, its first request).
	// Valid only when Granted.
	Grant Grant
	// Grants are every request of a v2 knock, for its source, in the
	// knock's order (Engine.Knock leaves those the host protects, which
	// it granted); nil for v1 (Grant) and until the knock opened.
	Grants []Grant
	// Version is the wire version the datagram claims (knock.Version).
	Version int
	// Knock is the opened v1 knock, or nil when the datagram did not open
	// or is not v1.
	Knock *knock.Knock
	// KnockV2 is the opened v2 knock, or nil.
	KnockV2 *knock.KnockV2
	// Remember says that the caller must record ReplayKey whatever the
	// verdict: a v2 knock whose signature verified (PROTOCOL-v2.md step
	// 9), so that a knock refused for its source cannot be granted later
	// from another one. A v1 knock is recorded only when granted.
	Remember bool
	// Client is the verified certificate, or nil when it did not verify.
	Client *pki.Client
	// Skew is the arrival time minus the knock's timestamp; zero when the
	// knock did not open.
	Skew time.Duration
	// ReplayKey names the datagram; the caller records it on a grant.
	ReplayKey ReplayKey
}

// Granted reports whether the knock earns a grant.
func (d Decision) Granted() bool { return d.Reason == ReasonNone }

// Verdict returns "grant" or "deny".
func (d Decision) Verdict() string {
	if d.Granted() {
		return "grant"
	}
	return "deny"
}

func deny(d Decision, r Reason, err error) Decision {
	d.Reason, d.Err = r, err
	return d
}

// Decide runs every check of PROTOCOL.md on one knock, in order, and says
// whether it earns a grant. Before them it refuses, at no cost, a source
// that is an IPv4 address in IPv6 form (ReasonMappedSource), and check 6
// also refuses an IPv4 client address carried over IPv6. It is pure: it reads the replay cache (a knock
// seen before is denied) but does not record the knock; the caller adds
// d.ReplayKey when it acts on a grant, and that add is the final,
// race-free replay check (Engine.Knock does both). seen may be nil.
func Decide(in Input, trust *Trust, seen *ReplayCache) Decision {
	return decide(in, trust, seen, nil, nil)
}

// decide is Decide with an outcome cache (nil: none), which spares a
// datagram seen before the checks that depend on nothing but its bytes
// and the trust state (see outcomeCache), and a shared-secret cache (nil:
// none), which spares a datagram whose ephemeral key was seen before the
// ECDH (see sharedSecrets); every other check runs as in Decide, in the
// same order, with the same result.
func decide(in Input, trust *Trust, seen *ReplayCache, outcomes *outcomeCache, secrets *sharedSecrets) Decision {
	var d Decision
	src := in.Source
	if ipv4InIPv6(src) {
		return deny(d, ReasonMappedSource, fmt.Errorf("IPv6 source %s is an IPv4 address in IPv6 form", src))
	}
	if trust == nil || trust.ServerKey == nil || trust.Verifier == nil {
		return deny(d, ReasonUntrusted, errors.New("no trust state loaded"))
	}
	certTime := in.CertTime
	if certTime.IsZero() {
		certTime = in.Now
	}
	if d.Version = knock.Version(in.Datagram); d.Version == 2 {
		return decideV2(d, in, certTime, trust, seen, outcomes, secrets)
	}

	// Garbage is refused before it is hashed, and a replay before any
	// public-key work: hashing costs a microsecond, an ECDH fifty or more.
	if err := knock.CheckEnvelope(in.Datagram); err != nil {
		return deny(d, ReasonMalformed, err)
	}
	d.ReplayKey = KeyOf(in.Datagram)
	if seen != nil && seen.Seen(d.ReplayKey, in.Now) {
		return deny(d, ReasonReplay, errReplay)
	}

	var fresh outcome // on the stack: Decide without a cache allocates nothing more
	var whole ReplayKey
	if outcomes != nil {
		whole = datagramHash(in.Datagram)
	}
	o := outcomes.get(whole, trust, src.Is6(), in.Now)
	if o == nil {
		fresh = computeOutcome(in.Datagram, trust, src.Is6(), certTime, in.Now, secrets)
		if outcomes != nil {
			cached := fresh
			outcomes.put(whole, &cached)
		}
		o = &fresh
	}
	k := o.knock
	if k == nil {
		return deny(d, o.openReason, o.openErr)
	}
	d.Knock = k
	d.Skew = in.Now.Sub(k.Time())
	d.Grant = Grant{Source: src, Proto: k.Proto, Port: k.Port}

	if o.certErr != nil {
		return deny(d, o.certReason, o.certErr)
	}
	// The verifier remembers certificates that verified, and checks their
	// validity period and the CRL again every time.
	client, err := trust.Verifier.Verify(k.Certificate, certTime)
	if err != nil {
		return deny(d, certReason(err), err)
	}
	d.Client = client
	sigOK := o.sigOK
	if !o.sigChecked { // the certificate was refused when the outcome was made
		sigOK = k.VerifySignature(client.PublicKey)
	}
	if !sigOK {
		return deny(d, ReasonBadSignature, errors.New("signature does not verify with the certificate's key"))
	}
	if d.Skew > trust.Tolerance {
		return deny(d, ReasonStaleTimestamp, fmt.Errorf("timestamp %ds old, tolerance %s", int64(d.Skew/time.Second), trust.Tolerance))
	}
	if -d.Skew > trust.Tolerance {
		return deny(d, ReasonFutureTimestamp, fmt.Errorf("timestamp %ds ahead, tolerance %s", int64(-d.Skew/time.Second), trust.Tolerance))
	}
	if v4, ok := embeddedIPv4(k.ClientIP); ok && src.Is6() {
		return deny(d, ReasonSourceMismatch, fmt.Errorf("knock names IPv4 address %s but came over IPv6 from %s", v4, src))
	}
	if k.ClientIP != src {
		return deny(d, ReasonSourceMismatch, fmt.Errorf("knock names %s but came from %s", k.ClientIP, src))
	}
	if !client.HasAuthorization {
		return deny(d, ReasonNotAuthorized, errors.New("certificate carries no authorisation"))
	}
	if !client.Authorization.Allows(k.Proto, k.Port) {
		return deny(d, ReasonNotAuthorized, fmt.Errorf("certificate allows %s, not %s/%d", client.Authorization.CLIString(), k.Proto, k.Port))
	}
	return d
}

// ipv4InIPv6 reports whether a is an IPv6 address that stands for an IPv4
// one: v4-mapped (::ffff:0:0/96) or v4-compatible (::/96). Neither is ever
// the source of a genuine IPv6 datagram (RFC 4291 §2.5.5: mapped addresses
// belong to the socket API, compatible ones are deprecated), but Linux
// hands UDPv6 datagrams from them to sockets, and a dual-stack service
// answers a mapped source over IPv4. The gate and the knock path refuse
// them, so that spoofed IPv6 cannot ride an IPv4 grant or earn one
// without IPv4's anti-spoofing. The loopback ::1 is excluded: it is not
// an IPv4 address, and the kernel accepts it only on lo. The unspecified
// :: is included: it is never the source of TCP or UDP.
func ipv4InIPv6(a netip.Addr) bool {
	if !a.Is6() {
		return false
	}
	b := a.As16()
	if [10]byte(b[:10]) != [10]byte{} {
		return false
	}
	mapped := b[10] == 0xff && b[11] == 0xff
	compatible := b[10] == 0 && b[11] == 0 && a != netip.IPv6Loopback()
	return mapped || compatible
}

// embeddedIPv4 returns the IPv4 address that a knock's 16-byte client
// address names when it came over IPv6: PROTOCOL.md writes an IPv4 client
// as 4 bytes and 12 zero bytes (the client seals a v4-mapped address the
// same way), and relies on the carrying datagram's family to tell which
// was meant. Read as IPv6, those bytes are an address whose low 96 bits
// are zero, the Subnet-Router anycast address of a /32 (RFC 4291 §2.6.1),
// which no client sends from. Such a knock was made for an IPv4 path, so
// check 6 (the client address equals the source) cannot hold for an IPv6
// source, even one that spells the same 16 bytes: it is refused as a
// source mismatch rather than granted to an address the client never
// named. A v4-mapped address written as 16 bytes names IPv4 too.
func embeddedIPv4(ip netip.Addr) (netip.Addr, bool) {
	if ip.Is4In6() {
		return ip.Unmap(), true
	}
	b := ip.As16()
	if !ip.Is6() || [12]byte(b[4:]) != [12]byte{} {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(b[:4])), true
}

// certReason maps a pki verification error to a Reason.
func certReason(err error) Reason {
	switch {
	case errors.Is(err, pki.ErrRevoked):
		return ReasonRevoked
	case errors.Is(err, pki.ErrExpired):
		return ReasonExpired
	case errors.Is(err, pki.ErrNotYetValid):
		return ReasonNotYetValid
	}
	return ReasonUntrusted
}

// SealedAt returns the timestamp of the opened knock, either version, and
// false when none opened.
func (d *Decision) SealedAt() (time.Time, bool) {
	switch {
	case d.Knock != nil:
		return d.Knock.Time(), true
	case d.KnockV2 != nil:
		return d.KnockV2.Time(), true
	}
	return time.Time{}, false
}

// ReplayExpiry is when a knock with timestamp ts stops needing replay
// protection: once it is older than the tolerance, the timestamp check
// refuses it on its own. The later of arrival and timestamp counts, so a
// knock from a fast clock is remembered long enough too.
func ReplayExpiry(ts, now time.Time, tolerance time.Duration) time.Time {
	if ts.Before(now) {
		ts = now
	}
	return ts.Add(tolerance + time.Second)
}
