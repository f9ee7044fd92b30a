package daemon

import (
	"go.uber.org/zap"
)

// logStats writes the "counters" line: the engine's and every reader's.
func (d *daemon) logStats() {
	s := d.engine.Snapshot()
	g, k := d.gateTotals(), d.knockQ.Stats()
	d.log.Info("counters",
		zap.Any("knocks", s.Knocks),
		zap.Any("gate", s.Gate),
		zap.Uint64("would_deny", s.WouldDeny),
		zap.Int("grants", s.Grants),
		zap.Int("replay_cache", s.Replay),
		zap.Uint64("knock_outcome_hits", s.OutcomeHits),
		zap.Uint64("knock_secret_hits", s.SecretHits),
		zap.Uint64("gate_packets", g.Packets),
		zap.Uint64("gate_unknown", g.Unknown),
		zap.Uint64("gate_receive_errors", g.ReceiveErrors),
		zap.Uint64("gate_verdict_messages", g.VerdictMessages),
		zap.Uint64("gate_verdict_errors", g.VerdictErrors),
		zap.Uint64("gate_held", s.Deferred),
		zap.Uint64("gate_hold_timeouts", s.HoldTimeouts),
		zap.Uint64("gate_hold_overflows", s.HoldOverflows),
		zap.Uint64("knock_packets", k.Received.Load()),
		zap.Uint64("knock_shed", k.Shed.Load()),
		zap.Uint64("knock_truncated", k.Truncated.Load()),
		zap.Uint64("knock_receive_errors", k.ReceiveErrors.Load()),
		zap.Uint64("knock_verdict_errors", k.VerdictErrors.Load()),
	)
}

// gateTotals are the counters of every gate reader, summed.
type gateTotals struct {
	Packets, Accepted, Dropped, Rejected, Unknown, ReceiveErrors uint64
	VerdictMessages, VerdictErrors                               uint64
}

// gateTotals sums the counters of the gate readers, which each count their
// own queue (no shared cache line between them on the packet path).
func (d *daemon) gateTotals() gateTotals {
	var t gateTotals
	for _, g := range d.gateQ {
		s := g.Stats()
		t.Packets += s.Packets.Load()
		t.Accepted += s.Accepted.Load()
		t.Dropped += s.Dropped.Load()
		t.Rejected += s.Rejected.Load()
		t.Unknown += s.Unknown.Load()
		t.ReceiveErrors += s.ReceiveErrors.Load()
		t.VerdictMessages += s.VerdictMessages.Load()
		t.VerdictErrors += s.VerdictErrors.Load()
	}
	return t
}
