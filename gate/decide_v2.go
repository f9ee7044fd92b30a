package gate

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"time"

	"sknock/knock"
)

var (
	errNoOpener = errors.New("no server certificate loaded for knock v2")
	errMAC1     = errors.New("mac1 wrong: not made with this server's certificate (refused before any ECDH)")
)

// replayKeyLabel keeps v2 replay keys (of the encapsulated key) apart from
// v1 ones (of the whole datagram) in the one replay memory.
const replayKeyLabel = "sknock knock v2 enc"

// KeyOfEnc returns the replay key of a v2 knock with encapsulated key enc
// (PROTOCOL-v2.md step 3: the replay memory is keyed by enc).
func KeyOfEnc(enc []byte) ReplayKey {
	var buf [len(replayKeyLabel) + knock.EncSize]byte
	n := copy(buf[:], replayKeyLabel)
	n += copy(buf[n:], enc)
	return sha256.Sum256(buf[:n])
}

// CheckMAC1 makes the checks of a v2 datagram that cost no public-key
// operation, steps 1 and 2 of PROTOCOL-v2.md: the envelope and mac1. It
// returns ReasonNone when both hold. It does not allocate.
func (t *Trust) CheckMAC1(datagram []byte) Reason {
	if !knock.ValidEnvelopeV2(datagram) {
		return ReasonMalformed
	}
	if t == nil || t.Opener == nil {
		return ReasonUntrusted
	}
	if !t.Opener.CheckMAC1(datagram) {
		return ReasonBadMAC1
	}
	return ReasonNone
}

// decideV2 runs the checks of PROTOCOL-v2.md on a v2 datagram, in the
// document's order; d carries the version. Like decide, it reads the
// replay memory and records nothing: d.Remember tells the caller to
// record d.ReplayKey (step 9) whatever the verdict.
func decideV2(d Decision, in Input, certTime time.Time, trust *Trust, seen *ReplayCache, outcomes *outcomeCache, secrets *sharedSecrets) Decision {
	if err := knock.CheckEnvelopeV2(in.Datagram); err != nil {
		return deny(d, ReasonMalformed, err)
	}
	if trust.Opener == nil {
		return deny(d, ReasonUntrusted, errNoOpener)
	}
	if !trust.Opener.CheckMAC1(in.Datagram) {
		return deny(d, ReasonBadMAC1, errMAC1)
	}
	d.ReplayKey = KeyOfEnc(knock.EncOf(in.Datagram))
	if seen != nil && seen.Seen(d.ReplayKey, in.Now) {
		return deny(d, ReasonReplay, errReplay)
	}

	// Steps 4 to 8 depend on the datagram's bytes and the trust state
	// only (and the clock, which the outcome records it was judged at);
	// the outcome cache keys them by the whole datagram, since a changed
	// ciphertext under one enc is another knock.
	var fresh outcome
	var key ReplayKey
	if outcomes != nil {
		key = KeyOf(in.Datagram)
	}
	o := outcomes.get(key, trust, false, in.Now)
	if o == nil {
		fresh = computeOutcomeV2(in.Datagram, trust, certTime, in.Now, secrets)
		if outcomes != nil {
			cached := fresh
			outcomes.put(key, &cached)
		}
		o = &fresh
	}
	k := o.knock2
	if k == nil {
		return deny(d, o.openReason, o.openErr)
	}
	d.KnockV2 = k
	d.Skew = skewV2(in.Now, k.TimestampMillis)
	if r, err := checkWindowV2(in.Now, k.TimestampMillis, trust.Tolerance); err != nil {
		return deny(d, r, err)
	}
	if o.certErr != nil {
		return deny(d, o.certReason, o.certErr)
	}
	client, err := trust.Verifier.VerifyChain(k.Chain, certTime)
	if err != nil {
		return deny(d, certReason(err), err)
	}
	d.Client = client
	sigOK := o.sigOK
	if !o.sigChecked { // the timestamp or the chain failed when the outcome was made
		sigOK = k.VerifySignature(client.PublicKey)
	}
	if !sigOK {
		return deny(d, ReasonBadSignature, errors.New("signature does not verify with the client certificate's key"))
	}
	d.Remember = true

	src := in.Source
	if k.ClientIP != src { // the family too: an IPv4 address never equals an IPv6 one
		return deny(d, ReasonSourceMismatch, fmt.Errorf("knock names %s but came from %s", k.ClientIP, src))
	}
	if !client.HasAuthorization {
		return deny(d, ReasonNotAuthorized, errors.New("certificate carries no authorisation"))
	}
	for _, r := range k.Requests {
		if !client.Authorization.Allows(r.Proto, r.Port) {
			return deny(d, ReasonNotAuthorized, fmt.Errorf("certificate allows %s, not %s/%d (so none of the knock's %d requests is granted)", client.Authorization.CLIString(), r.Proto, r.Port, len(k.Requests)))
		}
	}
	d.Grants = make([]Grant, len(k.Requests))
	for i, r := range k.Requests {
		d.Grants[i] = Grant{Source: src, Proto: r.Proto, Port: r.Port}
	}
	d.Grant = d.Grants[0]
	return d
}

// computeOutcomeV2 runs steps 4 to 8 on datagram (whose envelope and mac1
// are known good) under trust: the HPKE open through secrets, the
// plaintext's layout, and, when the timestamp is within the window at
// now, the chain at certTime and the signature. A knock outside the
// window gets no chain or signature check here (decideV2 refuses it
// before them, and makes them itself if a later copy is in the window).
func computeOutcomeV2(datagram []byte, trust *Trust, certTime, now time.Time, secrets *sharedSecrets) outcome {
	o := outcome{trust: trust, expires: now.Add(2*trust.Tolerance + outcomeSlack)}
	k, err := trust.Opener.OpenV2AfterMAC1(datagram, secrets.exchanger(trust.Opener.Key()))
	if err != nil {
		o.openReason, o.openErr = ReasonMalformed, err
		if errors.Is(err, knock.ErrPublicKey) || errors.Is(err, knock.ErrDecrypt) {
			o.openReason = ReasonUndecryptable
		}
		return o
	}
	o.knock2 = k
	if _, err := checkWindowV2(now, k.TimestampMillis, trust.Tolerance); err != nil {
		return o
	}
	client, err := trust.Verifier.VerifyChain(k.Chain, certTime)
	o.judgeCertificate(client, err, k.VerifySignature)
	return o
}

// checkWindowV2 makes step 6: |now − ts| ≤ tolerance, in whole
// milliseconds (now rounded down), without overflow.
func checkWindowV2(now time.Time, ts uint64, tolerance time.Duration) (Reason, error) {
	nowMs := uint64(max(now.UnixMilli(), 0))
	tol := uint64(tolerance.Milliseconds())
	switch {
	case nowMs > ts && nowMs-ts > tol:
		return ReasonStaleTimestamp, fmt.Errorf("timestamp %d ms old, tolerance %s", nowMs-ts, tolerance)
	case ts > nowMs && ts-nowMs > tol:
		return ReasonFutureTimestamp, fmt.Errorf("timestamp %d ms ahead, tolerance %s", ts-nowMs, tolerance)
	}
	return ReasonNone, nil
}

// skewV2 is now minus the timestamp ts (Unix ms), saturated at the
// range of a Duration.
func skewV2(now time.Time, ts uint64) time.Duration {
	diff := float64(now.UnixMilli()) - float64(ts)
	ms := time.Duration(math.Max(math.Min(diff, float64(math.MaxInt64/int64(time.Millisecond))), float64(math.MinInt64/int64(time.Millisecond))))
	return ms * time.Millisecond
}
