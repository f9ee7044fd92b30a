package gate

import (
	"math/big"
	"sync"
	"time"

	"sknock/pki"
)

// CertBook remembers the subject and serial of the certificates that
// hold grants, which the grant table names only by CertID, so that a
// listing or an operator's revocation can name them. It is filled by the
// knock workers on each grant and bounded: when full, the certificates
// that no longer hold a grant are forgotten, and if it is still full a
// new one is not noted (its grants list without a subject). Safe for
// concurrent use.
type CertBook struct {
	mu     sync.Mutex
	certs  map[CertID]CertName
	max    int
	grants *GrantTable
}

// CertName is what a CertBook remembers of a certificate.
type CertName struct {
	Subject string
	Serial  *big.Int
}

// DefaultCertBook bounds a CertBook: far more certificates than hold
// grants at once on any real host.
const DefaultCertBook = 1 << 16

// NewCertBook returns a book of at most max certificates, pruned against
// grants.
func NewCertBook(grants *GrantTable, max int) *CertBook {
	return &CertBook{certs: make(map[CertID]CertName), max: max, grants: grants}
}

// Note remembers the certificate of a knock just granted.
func (b *CertBook) Note(c *pki.Client, now time.Time) {
	if c == nil || c.Serial == nil {
		return
	}
	id := CertIDOf(c.Serial)
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.certs[id]; ok {
		return
	}
	if len(b.certs) >= b.max {
		b.pruneLocked(now)
		if len(b.certs) >= b.max {
			return
		}
	}
	b.certs[id] = CertName{Subject: c.Subject, Serial: c.Serial}
}

// pruneLocked forgets the certificates without a live grant.
func (b *CertBook) pruneLocked(now time.Time) {
	grants, _ := b.grants.List(now, 0)
	live := make(map[CertID]bool, len(grants))
	for _, g := range grants {
		live[g.Cert] = true
	}
	for id := range b.certs {
		if !live[id] {
			delete(b.certs, id)
		}
	}
}

// Lookup returns what the book remembers of the certificate id.
func (b *CertBook) Lookup(id CertID) (CertName, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	c, ok := b.certs[id]
	return c, ok
}
