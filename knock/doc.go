// Package knock owns the sKnock wire formats: v1.0.0, byte for byte as
// the original sKnock clients send it (../shared/PROTOCOL.md; Seal, Open),
// and v2.0.0 (../shared/PROTOCOL-v2.md; SealV2, Opener.OpenV2): HPKE to
// the server certificate's key, a mac1 keyed by that certificate that a
// server checks before any public-key operation, several requests and an
// optional chain of intermediates. Version tells them apart.
//
// A v1 knock is one UDP datagram:
//
//	'a' | 1 0 0 | AES-128-CBC(plaintext) | ephemeral P-256 public key (65 bytes)
//
// and the plaintext is
//
//	0x00 | proto | port | client IP (16) | timestamp (4) | certificate DER |
//	signature length | zero padding | ECDSA-SHA256 signature
//
// Open only undoes the envelope and checks the layout; whether the
// certificate is trusted, the signature good and the request allowed is
// decided by package gate with package pki.
package knock
