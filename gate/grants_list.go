package gate

import (
	"net/netip"
	"time"
)

// GrantInfo is a live grant as an operator lists it: what it opens, the
// certificate that earned it (by CertID) and when it ends.
type GrantInfo struct {
	Grant
	// Cert names the certificate that made or last extended the grant;
	// zero when none was recorded.
	Cert CertID
	// Expiry is when the grant ends.
	Expiry time.Time
}

// List returns up to max of the grants live at now (max ≤ 0: all), in no
// particular order, and how many are live in all. It holds one shard's
// lock at a time, so the gate goes on deciding meanwhile.
func (t *GrantTable) List(now time.Time, max int) (grants []GrantInfo, live int) {
	n := now.UnixNano()
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		for k, e := range s.grants {
			if e.expiry() <= n {
				continue
			}
			live++
			if max <= 0 || len(grants) < max {
				grants = append(grants, infoOf(k, e))
			}
		}
		s.mu.RUnlock()
	}
	return grants, live
}

// EndWhere removes every grant for which match is true and returns those
// that were live at now: how an operator ends grants by source or all of
// them. match runs with a shard's lock held and must not call into the
// table.
func (t *GrantTable) EndWhere(now time.Time, match func(GrantInfo) bool) []GrantInfo {
	n := now.UnixNano()
	var ended []GrantInfo
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, e := range s.grants {
			g := infoOf(k, e)
			if !match(g) {
				continue
			}
			delete(s.grants, k)
			t.share.give(e.cert)
			if e.expiry() > n {
				ended = append(ended, g)
			}
		}
		s.mu.Unlock()
	}
	return ended
}

func infoOf(k grantKey, e grantEntry) GrantInfo {
	return GrantInfo{
		Grant:  Grant{Source: netip.AddrFrom16(k.addr).Unmap(), Proto: k.proto, Port: k.port},
		Cert:   e.cert,
		Expiry: time.Unix(0, e.expiry()),
	}
}
