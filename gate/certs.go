package gate

import (
	"math/big"
	"sync"
	"time"

	"sknock/pki"
)

// certRegistry knows the certificates behind the grant shares and the
// recorded connections: it counts each certificate's shares (so that one
// certificate, an insider knocking from many addresses, cannot fill the
// table) and keeps the verified certificate, so that a trust change can
// verify it again and revocation by serial can find it. A certificate
// stays known while it holds a share, and after that until a collection
// finds no recorded connection attributed to it. Its lock is taken inside
// a grant shard's, and only when a share comes or goes.
type certRegistry struct {
	mu    sync.Mutex
	max   int32 // shares one certificate may hold; zero: no bound
	certs map[CertID]*certEntry
}

type certEntry struct {
	shares int32
	client *pki.Client // nil until noted
	// chain is the chain a v2 knock carried (the client's certificate
	// first, then intermediates), which verifies it again; nil for v1.
	chain [][]byte
}

// noted is a known certificate and how it verifies again.
type noted struct {
	client *pki.Client
	chain  [][]byte // nil: the certificate alone (v1)
}

// verify verifies the certificate again under v at now: a v2 knock's by
// the chain it carried (its intermediates may be known only from it).
func (n noted) verify(v *pki.Verifier, now time.Time) error {
	_, err := verifyAgain(v, n.client.Cert.Raw, n.chain, now)
	return err
}

// verifyAgain verifies the certificate der under v at now, by chain when
// it is not nil (a v2 knock's: the certificate first, then the
// intermediates it carried), and returns it verified.
func verifyAgain(v *pki.Verifier, der []byte, chain [][]byte, now time.Time) (*pki.Client, error) {
	if chain != nil {
		return v.VerifyChain(chain, now)
	}
	return v.Verify(der, now)
}

// links returns what verifies n again: its chain, or the certificate
// alone (v1).
func (n noted) links() [][]byte {
	if len(n.chain) > 0 {
		return n.chain
	}
	return [][]byte{n.client.Cert.Raw}
}

// take counts one more share of cert, unless it holds max already.
func (r *certRegistry) take(cert CertID) bool {
	if cert.IsZero() {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.certs[cert]
	if e == nil {
		if r.certs == nil {
			r.certs = make(map[CertID]*certEntry)
		}
		e = &certEntry{}
		r.certs[cert] = e
	}
	if r.max > 0 && e.shares >= r.max {
		return false
	}
	e.shares++
	return true
}

// give counts one share of cert less; the certificate stays known until
// the next collect.
func (r *certRegistry) give(cert CertID) {
	if cert.IsZero() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.certs[cert]; e != nil && e.shares > 0 {
		e.shares--
	}
}

// note remembers the verified certificate c as cert's, with the chain it
// was verified by (nil: the certificate alone).
func (r *certRegistry) note(cert CertID, c *pki.Client, chain [][]byte) {
	if cert.IsZero() || c == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.certs == nil {
		r.certs = make(map[CertID]*certEntry)
	}
	e := r.certs[cert]
	if e == nil {
		e = &certEntry{}
		r.certs[cert] = e
	}
	e.client, e.chain = c, chain
}

// client returns cert's certificate, or nil when it is not known.
func (r *certRegistry) client(cert CertID) *pki.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.certs[cert]; e != nil {
		return e.client
	}
	return nil
}

// known returns every known certificate that was noted.
func (r *certRegistry) known() map[CertID]noted {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[CertID]noted, len(r.certs))
	for id, e := range r.certs {
		if e.client != nil {
			out[id] = noted{client: e.client, chain: e.chain}
		}
	}
	return out
}

// withSerial returns the known certificates whose serial is serial (one
// per issuing CA that used it).
func (r *certRegistry) withSerial(serial *big.Int) map[CertID]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[CertID]bool{}
	for id, e := range r.certs {
		if e.client != nil && e.client.Serial != nil && e.client.Serial.Cmp(serial) == 0 {
			out[id] = true
		}
	}
	return out
}

// collect forgets the certificates that hold no share and that attributed
// does not name (the certificates of recorded connections).
func (r *certRegistry) collect(attributed map[CertID]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, e := range r.certs {
		if e.shares == 0 && !attributed[id] {
			delete(r.certs, id)
		}
	}
}
