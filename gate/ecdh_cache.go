package gate

import (
	"crypto/ecdh"
	"sync"
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
	mu      sync.Mutex
	entries map[[knock.PublicKeySize]byte]sharedSecret
	ring    [][knock.PublicKeySize]byte
	next    int
	hits    atomic.Uint64
}

type sharedSecret struct {
	server *ecdh.PrivateKey
	secret []byte
}

func newSharedSecrets(max int) *sharedSecrets {
	if max <= 0 {
		max = DefaultSecretEntries
	}
	return &sharedSecrets{entries: make(map[[knock.PublicKeySize]byte]sharedSecret, max), ring: make([][knock.PublicKeySize]byte, 0, max)}
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
		c.mu.Lock()
		e, ok := c.entries[key]
		c.mu.Unlock()
		if ok && e.server == server {
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

func (c *sharedSecrets) put(key [knock.PublicKeySize]byte, s sharedSecret) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; ok {
		c.entries[key] = s
		return
	}
	if len(c.ring) < cap(c.ring) {
		c.ring = append(c.ring, key)
	} else {
		delete(c.entries, c.ring[c.next])
		c.ring[c.next] = key
		c.next = (c.next + 1) % len(c.ring)
	}
	c.entries[key] = s
}

// len returns how many secrets are remembered.
func (c *sharedSecrets) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
