// Package knock owns the sKnock wire format v1.0.0: sealing a knock on the
// client and opening one on the server, byte for byte as the original
// sKnock clients send it (../shared/PROTOCOL.md).
//
// A knock is one UDP datagram:
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
