package gate

import (
	"math/big"
	"time"
)

// GrantInfo is one certificate's live share of a grant, as an operator
// lists it: what it opens, the certificate that earned it and when it
// ends. A shared address has one per certificate.
type GrantInfo struct {
	Grant
	// Cert names the certificate of the share; zero when none was
	// recorded. Serial and Subject name it when the table knows it.
	Cert    CertID
	Serial  *big.Int
	Subject string
	// Expiry is when the share ends.
	Expiry time.Time
}

// List returns up to max of the grant shares live at now (max ≤ 0: all),
// in no particular order, and how many are live in all. It holds one
// shard's lock at a time, so the gate goes on deciding meanwhile.
func (t *GrantTable) List(now time.Time, max int) (grants []GrantInfo, live int) {
	n := now.UnixNano()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for k, e := range s.grants {
			if e.expiry() <= n {
				continue
			}
			var buf [MaxShares]share
			for _, sh := range s.sharesLocked(k, e, &buf) {
				if sh.expiry <= n {
					continue
				}
				live++
				if max <= 0 || len(grants) < max {
					grants = append(grants, t.infoOf(k, sh))
				}
			}
		}
		s.mu.RUnlock()
	}
	return grants, live
}

// EndWhere removes every grant share for which match is true and returns
// those that were live at now: how an operator ends grants by source, by
// certificate or all of them. match runs with a shard's lock held and
// must not call into the table.
func (t *GrantTable) EndWhere(now time.Time, match func(GrantInfo) bool) []EndedGrant {
	return t.endShares(now, func(g GrantInfo) (bool, error) { return match(g), nil })
}

func (t *GrantTable) infoOf(k grantKey, sh share) GrantInfo {
	g := GrantInfo{Grant: k.grant(), Cert: sh.cert, Expiry: time.Unix(0, sh.expiry)}
	if c := t.certs.client(sh.cert); c != nil {
		g.Serial, g.Subject = c.Serial, c.Subject
	}
	return g
}
