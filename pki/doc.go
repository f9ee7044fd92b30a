// Package pki owns sknock's certificates: loading PKCS#12 bundles (the
// original project's legacy RC2-40/3DES/SHA-1 ones and modern PBES2/AES
// ones) and reading their passwords, verifying the client certificate
// carried in a knock against the CA and its CRL, the authorisation name
// inside client certificates, and a small file-based CA that issues,
// revokes and publishes a CRL.
//
// # Verification
//
// A [Verifier] is immutable: it holds the trusted CAs and at most one CRL.
// Reloading trust (a new CA file, a refreshed CRL) means building a new
// Verifier and swapping it in, typically with an atomic.Pointer. Each
// Verifier caches the certificates it verified successfully, keyed by the
// SHA-256 of their DER, so a returning client costs only a time-window check
// here; the cache dies with the Verifier, so a CA or CRL change always
// re-verifies everything.
//
// # Stale CRLs
//
// A CRL past its nextUpdate keeps being used: the revocations in it still
// apply, and [CRL.Stale] lets the caller log a warning. A stale CRL never
// makes verification fail by itself (no fail closed: a late CRL fetch must
// not lock every client out) and is never dropped (no fail open: a late
// fetch must not un-revoke anyone), unless the caller asks for the
// first with [CRL.RefusingWhenStale]. A CRL that is not complete (a delta
// CRL, one scoped by an issuing distribution point) is refused when
// parsed: taken as complete it would un-revoke what it leaves out.
//
// # Authorisation name
//
// A client certificate says which ports it may open in a Subject
// Alternative Name of type otherName with type-id 1.3.6.1.4.1.19518 whose
// value is [0] EXPLICIT UTF8String, the comma-separated list "PROTO.PORT"
// (PROTO 1 for TCP, 0 for UDP), for example "1.2000,1.3000,0.8000". See
// [ParseAuthorization] for exactly what is accepted.
package pki
