package daemon

import (
	"go.uber.org/zap"

	"sknock/conns"
	"sknock/gate"
)

// ConnEnder ends the connections of ended grants (package conns); the
// real one talks to the kernel, tests use a fake.
type ConnEnder interface {
	// EndGrants ends every tracked connection from a grant's source to
	// its protocol and port, and returns how many it ended.
	EndGrants(ended []gate.EndedGrant) (int, error)
}

// systemEnder is the kernel's ConnEnder: socket destroy for local
// connections, conntrack deletion for forwarded ones.
type systemEnder struct{}

// EndGrants implements ConnEnder.
func (systemEnder) EndGrants(ended []gate.EndedGrant) (int, error) {
	return conns.EndGrants(conns.System{}, ended)
}

// endRevoked logs the grants a revocation ended and ends their
// connections.
func (d *daemon) endRevoked(ended []gate.EndedGrant) {
	for _, g := range ended {
		d.log.Warn("grant ended",
			zap.String("source", g.Source.String()),
			zap.String("proto", g.Proto.String()),
			zap.Uint64("port", uint64(g.Port)),
			zap.String("serial", g.Serial.String()),
			zap.String("reason", "revoked"),
			zap.Time("would_expire", g.Expiry),
		)
	}
	if len(ended) == 0 || d.marker == nil {
		return
	}
	n, err := d.marker.EndGrants(ended)
	if err != nil {
		d.log.Error("could not end every connection of the revoked grants; those go on until they close", zap.Int("ended", n), zap.Error(err))
		return
	}
	d.log.Warn("connections of revoked grants ended", zap.Int("connections", n))
}
