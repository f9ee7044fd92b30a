package gate

import (
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"time"

	"sknock/knock"
	"sknock/pki"
)

// DefaultOutcomeEntries bounds the outcome cache: at most this many
// datagrams are remembered, the oldest forgotten first. An entry holds
// the opened knock (its plaintext: a real knock's is under a kilobyte,
// the knock reader copies at most 4 KiB) or a reason, so the cache stays
// under about 20 MiB whatever is sent to it. Replayed floods repeat a
// handful of datagrams; the bound only has to outlast their variety.
const DefaultOutcomeEntries = 1 << 12

// outcomeSlack is how much longer than the timestamp window an outcome is
// kept: the window is two tolerances wide, and a copy arriving after it
// is refused by its timestamp, which the cached outcome still lets Decide
// check at the cost of one hash.
const outcomeSlack = 2 * time.Second

// outcome is what the costly, source-independent part of Decide found for
// one datagram under one trust state and address family: opening it
// (ECDH, decryption, layout), and, when it opened, the certificate check
// where its result does not depend on time, and the signature. It is
// immutable once cached.
type outcome struct {
	trust   *Trust
	ipv6    bool
	expires time.Time

	// openReason and openErr: why the datagram did not open (knock nil).
	openReason Reason
	openErr    error
	knock      *knock.Knock
	// knock2 is the opened v2 knock (knock is nil then).
	knock2 *knock.KnockV2

	// certReason and certErr: a certificate refusal that holds at any
	// time under this trust state (untrusted, malformed, revoked by a
	// fresh CRL); nil when the certificate verified or its refusal
	// depends on the time (expired, not yet valid, stale CRL), in which
	// case Decide asks the verifier again.
	certReason Reason
	certErr    error
	// sigChecked says whether the signature was checked (the certificate
	// verified); sigOK is the result.
	sigChecked, sigOK bool
}

// outcomeCache remembers outcomes by the datagram's hash, so that copies
// of one datagram (a replayed capture, from any number of sources) cost a
// hash each instead of an ECDH, a decryption and two signature checks.
// What depends on the source and the time — the timestamp window, the
// client address, the authorisation, the replay check, the certificate's
// validity period and revocation — is still checked for every copy, so a
// cached outcome never turns a refusal into a grant or the reverse. It is
// bounded in entries (oldest out first) and in time (the timestamp window
// and outcomeSlack), and a hit and a miss give the same answer, so it is
// no oracle.
type outcomeCache struct {
	*fifoMap[ReplayKey, *outcome]
	hits atomic.Uint64
}

// newOutcomeCache returns a cache of at most max entries (≤ 0:
// DefaultOutcomeEntries).
func newOutcomeCache(max int) *outcomeCache {
	if max <= 0 {
		max = DefaultOutcomeEntries
	}
	return &outcomeCache{fifoMap: newFIFOMap[ReplayKey, *outcome](max)}
}

// get returns the outcome cached for key under trust and the family, if
// it has not expired at now. A nil cache holds nothing.
func (c *outcomeCache) get(key ReplayKey, trust *Trust, ipv6 bool, now time.Time) *outcome {
	if c == nil {
		return nil
	}
	o, _ := c.fifoMap.get(key)
	if o == nil || o.trust != trust || o.ipv6 != ipv6 || !now.Before(o.expires) {
		return nil
	}
	c.hits.Add(1)
	return o
}

// put caches o under key, replacing what key had and forgetting the
// oldest entry when the cache is full. A nil cache keeps nothing.
func (c *outcomeCache) put(key ReplayKey, o *outcome) {
	if c == nil {
		return
	}
	c.fifoMap.put(key, o)
}

// computeOutcome runs the costly, source-independent checks on datagram
// (whose envelope is known to be good) under trust, the certificate's at
// certTime, the ECDH through secrets (nil: none remembered).
func computeOutcome(datagram []byte, trust *Trust, ipv6 bool, certTime, now time.Time, secrets *sharedSecrets) outcome {
	o := outcome{trust: trust, ipv6: ipv6, expires: now.Add(2*trust.Tolerance + outcomeSlack)}
	k, err := knock.OpenWith(datagram, secrets.opener(trust.ServerKey), ipv6)
	if err != nil {
		o.openReason, o.openErr = ReasonMalformed, err
		if errors.Is(err, knock.ErrPublicKey) || errors.Is(err, knock.ErrPadding) {
			o.openReason = ReasonUndecryptable
		}
		return o
	}
	o.knock = k
	client, err := trust.Verifier.Verify(k.Certificate, certTime)
	o.judgeCertificate(client, err, k.VerifySignature)
	return o
}

// judgeCertificate records what a certificate (or chain) check found: a
// refusal that holds at any time under the trust state, or, when it
// verified, whether the signature verifies with the client's key.
func (o *outcome) judgeCertificate(client *pki.Client, err error, verify func(*ecdsa.PublicKey) bool) {
	if err != nil {
		if timeless(err) {
			o.certReason, o.certErr = certReason(err), err
		}
		return
	}
	o.sigChecked, o.sigOK = true, verify(client.PublicKey)
}

// timeless reports whether a certificate refusal holds at any time under
// the same trust state: everything but a validity period (the
// certificate's or a CA's) not yet begun or over, and a CRL past its next
// update.
func timeless(err error) bool {
	var invalid x509.CertificateInvalidError
	if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
		return false
	}
	return !errors.Is(err, pki.ErrExpired) && !errors.Is(err, pki.ErrNotYetValid) && !errors.Is(err, pki.ErrCRLStale)
}
