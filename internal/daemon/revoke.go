package daemon

import (
	"errors"
	"fmt"

	"github.com/ti-mo/conntrack"
	"go.uber.org/zap"

	"sknock/gate"
)

// ConnMarker sets a connection mark on the tracked connections of ended
// grants, so that the rule set's revoke rules end them; the real one talks
// to conntrack over netlink (github.com/ti-mo/conntrack), tests use a fake.
type ConnMarker interface {
	// MarkFlows ORs mark into the mark of every tracked connection from
	// a grant's source to its protocol and port, and returns how many it
	// marked.
	MarkFlows(ended []gate.EndedGrant, mark uint32) (int, error)
}

// conntrackMarker is the kernel's ConnMarker.
type conntrackMarker struct{}

// MarkFlows implements ConnMarker. Marking rather than deleting is what
// makes the end stick: a deleted entry is re-created by the connection's
// next packet (nf_conntrack_tcp_loose), a marked one keeps its mark.
func (conntrackMarker) MarkFlows(ended []gate.EndedGrant, mark uint32) (int, error) {
	c, err := conntrack.Dial(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack: %w", err)
	}
	defer c.Close()
	flows, err := c.Dump(nil)
	if err != nil {
		return 0, fmt.Errorf("conntrack dump: %w", err)
	}
	marked := 0
	var errs []error
	for _, f := range flows {
		if !endedFlow(f, ended) || f.Mark&mark == mark {
			continue
		}
		upd := conntrack.Flow{TupleOrig: f.TupleOrig, TupleReply: f.TupleReply, Zone: f.Zone, Mark: f.Mark | mark}
		if err := c.Update(upd); err != nil {
			errs = append(errs, fmt.Errorf("conntrack update %s: %w", f.TupleOrig, err))
			continue
		}
		marked++
	}
	return marked, errors.Join(errs...)
}

// endedFlow reports whether f is a connection one of the ended grants let
// in: from its source to its protocol and port.
func endedFlow(f conntrack.Flow, ended []gate.EndedGrant) bool {
	t := f.TupleOrig
	for _, g := range ended {
		if t.IP.SourceAddress.Unmap() == g.Source && t.Proto.Protocol == uint8(g.Proto) && t.Proto.DestinationPort == g.Port {
			return true
		}
	}
	return false
}

// endRevoked logs the grants a revocation ended and, with a revoke mark
// configured, marks their connections so that the rules end them.
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
	mark := d.run.cfg.Rules.RevokeMark
	if len(ended) == 0 || mark == 0 || d.marker == nil {
		return
	}
	n, err := d.marker.MarkFlows(ended, mark)
	if err != nil {
		d.log.Error("could not mark every connection of the revoked grants; those go on until they close", zap.Int("marked", n), zap.Error(err))
		return
	}
	d.log.Warn("connections of revoked grants ended", zap.Int("connections", n))
}
