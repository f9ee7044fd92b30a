package daemon

import (
	"go.uber.org/zap"

	"sknock/gate"
	"sknock/packet"
)

// counter is one number sknockd counts, or a family of them by label,
// declared once and rendered alike by the Prometheus collector
// (metrics.go), the `status` answer (control.go) and the "counters" log
// line (logStats): one registry, several renderings, as tailscale's
// util/clientmetric. Adding a counter is adding it to counters.
type counter struct {
	// name is its key in the counters line and in status. A family is
	// a map by its last label in the line, and name_VALUE keys in status.
	name string
	// status, when set, is its key in status instead (the name status
	// showed before the counters were one list).
	status string
	// metric is its Prometheus name and help its help; "" exports
	// nothing. Counters that share a metric are told apart by labels.
	metric, help string
	// gauge is a value that goes down too (a size).
	gauge bool
	// labels name a family's labels (its samples' label values); none
	// for one number.
	labels []string
	// with is one more Prometheus label, name and value, fixed for the
	// counter: it tells apart the counters that share a metric.
	with [2]string
	// sparse leaves a family's zero values out of the line and status
	// (Prometheus shows them all, so a series never vanishes).
	sparse bool
	// read takes the counter's samples from one reading.
	read func(r *reading) []sample
}

// sample is one value of a counter: a family's has its label values.
type sample struct {
	labels []string
	value  uint64
}

// one reads a counter that is one number.
func one(read func(r *reading) uint64) func(r *reading) []sample {
	return func(r *reading) []sample { return []sample{{value: read(r)}} }
}

// reading is every source of the counters, read once per rendering: the
// engine's, the gate readers' (summed), the knock reader's and opsStats.
type reading struct {
	engine gate.Snapshot
	gate   gateTotals
	knock  knockTotals
	ops    *opsStats
}

// knockTotals are the knock reader's counters, zero without a reader.
type knockTotals struct {
	Received, Shed, Truncated, ReceiveErrors, VerdictErrors uint64
	RepeatLoops                                             uint64
}

// read takes a reading of every counter's source.
func (d *daemon) read() *reading {
	r := &reading{engine: d.engine.Snapshot(), gate: d.gateTotals(), ops: d.ops}
	if d.knockQ != nil {
		k := d.knockQ.Stats()
		r.knock = knockTotals{k.Received.Load(), k.Shed.Load(), k.Truncated.Load(), k.ReceiveErrors.Load(), k.VerdictErrors.Load(), k.RepeatLoops.Load()}
	}
	return r
}

// counters are every counter sknockd keeps, in the order of the counters
// line. The metric names are fixed: dashboards and alerts use them.
var counters = []counter{
	{name: "knocks", metric: "sknock_knocks_total", help: "Knocks decided, by verdict (grant, deny) and reason (granted for a grant).",
		labels: []string{"verdict", "reason"}, sparse: true, read: func(r *reading) []sample {
			out := []sample{{labels: []string{"grant", gate.ReasonNone.String()}, value: r.engine.Knocks[gate.ReasonNone.String()]}}
			for _, reason := range gate.Reasons() {
				out = append(out, sample{labels: []string{"deny", reason.String()}, value: r.engine.Knocks[reason.String()]})
			}
			return out
		}},
	{name: "gate", metric: "sknock_gate_verdicts_total", help: "Final verdicts on packets to protected ports, by verdict (accept, drop, reject).",
		labels: []string{"verdict"}, read: func(r *reading) []sample {
			var out []sample
			for _, v := range []packet.Verdict{packet.Accept, packet.Drop, packet.Reject} {
				out = append(out, sample{labels: []string{v.String()}, value: r.engine.Gate[v.String()]})
			}
			return out
		}},
	{name: "would_deny", status: "gate_would_deny", metric: "sknock_gate_audit_accepts_total", help: "Packets policy none accepted without a grant (would have been denied).",
		read: one(func(r *reading) uint64 { return r.engine.WouldDeny })},
	{name: "grants", metric: "sknock_grants", help: "Grants in the grant table (expired ones until the next sweep, at most a second).", gauge: true,
		read: one(func(r *reading) uint64 { return uint64(r.engine.Grants) })},
	{name: "connections", metric: "sknock_connections_recorded", help: "Connections the grants let in, recorded with the certificates they are attributed to (for revocation).", gauge: true,
		read: one(func(r *reading) uint64 { return uint64(r.engine.Conns) })},
	{name: "connections_full", metric: "sknock_connections_full_total", help: "Granted packets refused because the record of connections was full.",
		read: one(func(r *reading) uint64 { return r.engine.ConnsFull })},
	{name: "replay_cache", metric: "sknock_replay_cache_entries", help: "Knocks remembered by the replay cache.", gauge: true,
		read: one(func(r *reading) uint64 { return uint64(r.engine.Replay) })},
	{name: "knock_outcome_hits",
		read: one(func(r *reading) uint64 { return r.engine.OutcomeHits })},
	{name: "knock_secret_hits",
		read: one(func(r *reading) uint64 { return r.engine.SecretHits })},
	{name: "gate_packets", metric: "sknock_gate_packets_total", help: "Packets the gate readers received.",
		read: one(func(r *reading) uint64 { return r.gate.Packets })},
	{name: "gate_unknown", metric: "sknock_gate_unknown_packets_total", help: "Gate packets that did not decode as TCP or UDP (dropped).",
		read: one(func(r *reading) uint64 { return r.gate.Unknown })},
	{name: "gate_receive_errors", metric: "sknock_queue_receive_errors_total", help: "Receive errors on the NFQUEUE sockets, by queue role (gate, knock).",
		with: [2]string{"queue", "gate"}, read: one(func(r *reading) uint64 { return r.gate.ReceiveErrors })},
	{name: "gate_verdict_messages",
		read: one(func(r *reading) uint64 { return r.gate.VerdictMessages })},
	{name: "gate_verdict_errors", metric: "sknock_queue_verdict_errors_total", help: "Verdicts the kernel refused, by queue role (gate, knock).",
		with: [2]string{"queue", "gate"}, read: one(func(r *reading) uint64 { return r.gate.VerdictErrors })},
	{name: "gate_repeat_loops", metric: "sknock_queue_repeat_loops_total", help: repeatLoopsHelp,
		with: [2]string{"queue", "gate"}, read: one(func(r *reading) uint64 { return r.gate.RepeatLoops })},
	{name: "gate_grants_in_place", metric: "sknock_gate_grants_in_place_total", help: "Granted packets accepted outright (NF_ACCEPT) because nothing followed the gate's jump in mangle PREROUTING at the ruleset generation read for their batch; the rest repeat through the chain with the grant bit.",
		read: one(func(r *reading) uint64 { return r.gate.InPlace })},
	{name: "gate_held", metric: "sknock_gate_held_packets_total", help: "Packets held while their source's knock was being decided.",
		read: one(func(r *reading) uint64 { return r.engine.Deferred })},
	{name: "gate_hold_timeouts", metric: "sknock_gate_hold_timeouts_total", help: "Held packets settled because their knock took too long.",
		read: one(func(r *reading) uint64 { return r.engine.HoldTimeouts })},
	{name: "gate_hold_overflows", metric: "sknock_gate_hold_overflows_total", help: "Packets that raced a knock but were decided at once because the hold was full.",
		read: one(func(r *reading) uint64 { return r.engine.HoldOverflows })},
	{name: "knock_packets", metric: "sknock_knock_packets_total", help: "Datagrams the knock reader received.",
		read: one(func(r *reading) uint64 { return r.knock.Received })},
	{name: "knock_shed", metric: "sknock_knock_shed_total", help: "Knocks dropped undecided because every worker was busy and the backlog full.",
		read: one(func(r *reading) uint64 { return r.knock.Shed })},
	{name: "knock_truncated", metric: "sknock_knock_truncated_total", help: "Knock datagrams longer than the reader copies, denied as malformed.",
		read: one(func(r *reading) uint64 { return r.knock.Truncated })},
	{name: "knock_receive_errors", metric: "sknock_queue_receive_errors_total", help: "Receive errors on the NFQUEUE sockets, by queue role (gate, knock).",
		with: [2]string{"queue", "knock"}, read: one(func(r *reading) uint64 { return r.knock.ReceiveErrors })},
	{name: "knock_verdict_errors", metric: "sknock_queue_verdict_errors_total", help: "Verdicts the kernel refused, by queue role (gate, knock).",
		with: [2]string{"queue", "knock"}, read: one(func(r *reading) uint64 { return r.knock.VerdictErrors })},
	{name: "knock_repeat_loops", metric: "sknock_queue_repeat_loops_total", help: repeatLoopsHelp,
		with: [2]string{"queue", "knock"}, read: one(func(r *reading) uint64 { return r.knock.RepeatLoops })},
	{name: "trust_reloads", metric: "sknock_trust_reloads_total", help: "Trust states (bundle, CAs, CRL) built and put in force after the start.",
		read: one(func(r *reading) uint64 { return r.ops.trustReloads.Load() })},
	{name: "trust_reload_failures", metric: "sknock_trust_reload_failures_total", help: "Reloads and CRL refreshes refused; the trust state in force stayed.",
		read: one(func(r *reading) uint64 { return r.ops.trustReloadFailures.Load() })},
	{name: "rules_restorations", metric: "sknock_rules_restorations_total", help: "Changes to the rule set that the watcher found and restored.",
		read: one(func(r *reading) uint64 { return r.ops.rulesRestored.Load() })},
	{name: "rules_repair_failures", metric: "sknock_rules_repair_failures_total", help: "Changes to the rule set that the watcher found and could not restore.",
		read: one(func(r *reading) uint64 { return r.ops.rulesRepairFailed.Load() })},
	{name: "rules_window_attributed", metric: "sknock_rules_window_connections_total", help: windowConnsHelp,
		with: [2]string{"outcome", "attributed"}, read: one(func(r *reading) uint64 { return r.ops.windowAttributed.Load() })},
	{name: "rules_window_ungranted", metric: "sknock_rules_window_connections_total", help: windowConnsHelp,
		with: [2]string{"outcome", "ungranted"}, read: one(func(r *reading) uint64 { return r.ops.windowUngranted.Load() })},
}

// windowConnsHelp is the help of both outcomes of the window's connections.
const windowConnsHelp = "Connections to protected ports opened while another tool had the rules away, found right after the watcher restored them: attributed to their source's live grant (a revocation ends them), or ungranted (they never met the gate; left alone)."

// family is a counter's samples as a map by the last label, the zero
// ones left out when the counter is sparse.
func (c *counter) family(samples []sample) map[string]uint64 {
	m := make(map[string]uint64, len(samples))
	for _, s := range samples {
		if s.value > 0 || !c.sparse {
			m[s.labels[len(s.labels)-1]] = s.value
		}
	}
	return m
}

// logStats writes the "counters" line: every counter.
func (d *daemon) logStats() {
	r := d.read()
	fields := make([]zap.Field, 0, len(counters))
	for i := range counters {
		c := &counters[i]
		samples := c.read(r)
		if len(c.labels) > 0 {
			fields = append(fields, zap.Any(c.name, c.family(samples)))
			continue
		}
		fields = append(fields, zap.Uint64(c.name, samples[0].value))
	}
	d.log.Info("counters", fields...)
}

// statusCounters are every counter as `sknock status` shows them.
func statusCounters(r *reading) map[string]uint64 {
	out := map[string]uint64{}
	for i := range counters {
		c := &counters[i]
		name := c.name
		if c.status != "" {
			name = c.status
		}
		samples := c.read(r)
		if len(c.labels) > 0 {
			for label, v := range c.family(samples) {
				out[name+"_"+label] = v
			}
			continue
		}
		out[name] = samples[0].value
	}
	return out
}

// repeatLoopsHelp is the help of sknock_queue_repeat_loops_total.
const repeatLoopsHelp = "Packets answered without NF_REPEAT because they came back stripped of sknock's signal bit (a rule above the gate's jump rewrites the mark), by queue role (gate, knock)."

// gateTotals are the counters of every gate reader, summed.
type gateTotals struct {
	Packets, Accepted, Dropped, Rejected, Unknown, ReceiveErrors uint64
	VerdictMessages, VerdictErrors                               uint64
	// RepeatLoops counts packets answered without a repeat because a
	// rule above the gate's jump stripped their signal bit.
	RepeatLoops uint64
	// InPlace counts grants accepted without a repeat: nothing followed
	// the gate's jump in mangle PREROUTING.
	InPlace uint64
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
		t.RepeatLoops += s.RepeatLoops.Load()
		t.InPlace += s.AcceptedInPlace.Load()
	}
	return t
}
