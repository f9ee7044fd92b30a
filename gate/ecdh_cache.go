package gate

import (
	"crypto/ecdh"
	"sync/atomic"

	"sknock/knock"
)

// DefaultSecretEntries bounds the shared-secret cache (about 150 bytes an
// entry: under 1 MiB).
const DefaultSecretEntries = 1 << 12

// sharedSecrets remembers the ECDH shared secret per ephemeral public key
// and server key, so that datagrams reusing one ephemeral key (a captured
// knock with its ciphertext altered, which the outcome cache cannot
// recognise) cost a decryption instead of an ECDH. The secret depends on
// nothing else, so a hit gives exactly what the ECDH would; it reveals
// nothing and decides nothing. It is bounded in entries, oldest out first.
type sharedSecrets struct {
	*fifoMap[[knock.PublicKeySize]byte, sharedSecret]
	hits atomic.Uint64
}

type sharedSecret struct {
	server ecdh.KeyExchanger
	secret []byte
}

func newSharedSecrets(max int) *sharedSecrets {
	if max <= 0 {
		max = DefaultSecretEntries
	}
	return &sharedSecrets{fifoMap: newFIFOMap[[knock.PublicKeySize]byte, sharedSecret](max)}
}

// opener returns the knock.SharedSecret under server: a remembered
// secret for the ephemeral key (a key is remembered only once it proved
// valid), or the key's validation and a new ECDH, remembered. A nil cache
// always does the ECDH.
func (c *sharedSecrets) opener(server *ecdh.PrivateKey) knock.SharedSecret {
	ecdhWith := knock.ECDHWith(server)
	if c == nil {
		return ecdhWith
	}
	return func(ephemeral []byte) ([]byte, error) {
		if len(ephemeral) != knock.PublicKeySize {
			return nil, knock.ErrPublicKey
		}
		key := [knock.PublicKeySize]byte(ephemeral)
		if e, ok := c.get(key); ok && e.server == server {
			c.hits.Add(1)
			return e.secret, nil
		}
		secret, err := ecdhWith(ephemeral)
		if err != nil {
			return nil, err
		}
		c.put(key, sharedSecret{server: server, secret: secret})
		return secret, nil
	}
}

// exchanger returns server as an ecdh.KeyExchanger for HPKE (knock v2)
// whose ECDH remembers its shared secrets in c, as opener does for v1: an
// encapsulated key is an ephemeral P-256 public key too, and its secret
// is the same X coordinate. A nil cache returns server itself.
func (c *sharedSecrets) exchanger(server ecdh.KeyExchanger) ecdh.KeyExchanger {
	if c == nil {
		return server
	}
	return cachingExchanger{c: c, server: server}
}

// cachingExchanger is the KeyExchanger exchanger returns.
type cachingExchanger struct {
	c      *sharedSecrets
	server ecdh.KeyExchanger
}

// PublicKey returns the server's public key.
func (x cachingExchanger) PublicKey() *ecdh.PublicKey { return x.server.PublicKey() }

// Curve returns the server key's curve.
func (x cachingExchanger) Curve() ecdh.Curve { return x.server.Curve() }

// ECDH returns the shared secret with peer, remembered or computed.
func (x cachingExchanger) ECDH(peer *ecdh.PublicKey) ([]byte, error) {
	b := peer.Bytes()
	if len(b) != knock.PublicKeySize {
		return x.server.ECDH(peer)
	}
	key := [knock.PublicKeySize]byte(b)
	if e, ok := x.c.get(key); ok && e.server == x.server {
		x.c.hits.Add(1)
		return e.secret, nil
	}
	secret, err := x.server.ECDH(peer)
	if err != nil {
		return nil, err
	}
	x.c.put(key, sharedSecret{server: x.server, secret: secret})
	return secret, nil
}
