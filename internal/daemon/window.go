package daemon

import (
	"fmt"
	"net"
	"net/netip"

	"go.uber.org/zap"

	"sknock/conns"
	"sknock/gate"
	"sknock/packet"
	"sknock/rules"
)

// While another tool has sknock's rules away (a flush, a rule outranking
// the jump), new connections to protected ports reach their services
// without meeting the gate, until the watcher puts the rules back (within
// about a second). Right after each restore the daemon lists conntrack's
// connections and finds those the gate would have judged and has no
// record of: each one from a source that holds a live grant for its port
// is recorded to that grant's certificates, so that a later revocation
// ends it like any other; the rest (no live grant) are counted and
// logged, and left alone, since ending connections the gate never judged
// could cut ones that were there before sknockd started.

// FlowLister lists the kernel's tracked connections (conns.System in
// production, a fake in tests).
type FlowLister interface {
	Conns() ([]conns.Conn, error)
}

// windowLogMax bounds the tuples one log line names.
const windowLogMax = 8

// restoredAny reports whether the watcher put anything back.
func restoredAny(findings []rules.Finding) bool {
	for _, f := range findings {
		if f.Err == nil {
			return true
		}
	}
	return false
}

// attributeWindow records the connections opened while the rules were
// away to their sources' live grants, and counts and logs what it found.
func (d *daemon) attributeWindow() {
	if d.flows == nil {
		return
	}
	flows, err := d.flows.Conns()
	var local map[netip.Addr]bool
	if err == nil {
		local, err = localAddrs()
	}
	if err != nil {
		d.log.Warn("connections opened while the rules were away not looked for: a revocation will not end them",
			zap.Error(err))
		return
	}
	d.attributeFlows(flows, local)
}

// attributeFlows is attributeWindow's work on the flows conntrack listed
// and this host's addresses.
func (d *daemon) attributeFlows(flows []conns.Conn, local map[netip.Addr]bool) {
	judged := gatedFlows(flows, local, d.decisions.protects)
	if len(judged) == 0 {
		return
	}
	attributed, ungranted := d.engine.AttributeConns(judged, d.engine.Now())
	d.ops.windowAttributed.Add(uint64(attributed))
	d.ops.windowUngranted.Add(uint64(len(ungranted)))
	if attributed > 0 {
		d.log.Warn("connections opened while the rules were away recorded to their live grants: a revocation ends them",
			zap.Int("connections", attributed))
	}
	if len(ungranted) > 0 {
		var names []string
		for _, c := range ungranted[:min(len(ungranted), windowLogMax)] {
			names = append(names, c.String())
		}
		d.log.Error("connections to protected ports opened without a grant while the rules were away: they never met the gate and go on",
			zap.Int("connections", len(ungranted)), zap.Strings("first", names))
	}
}

// gatedFlows returns the original tuples of the flows the gate would
// have judged: to a port protects says is protected, addressed to one of
// this host's addresses (local) or DNAT-ed by it (a published container
// port), and not over loopback.
func gatedFlows(flows []conns.Conn, local map[netip.Addr]bool, protects func(packet.Proto, uint16) bool) []gate.Conn {
	var out []gate.Conn
	for _, f := range flows {
		o := f.Orig
		src, dst := o.Src.Addr().Unmap(), o.Dst.Addr().Unmap()
		if src.IsLoopback() || dst.IsLoopback() || !protects(o.Proto, o.Dst.Port()) {
			continue
		}
		dnat := f.Reply.Src.Addr().Unmap() != dst || f.Reply.Src.Port() != o.Dst.Port()
		if !dnat && !local[dst] {
			continue // forwarded: the gate returns it untouched
		}
		out = append(out, gate.Conn{Proto: o.Proto, Src: netip.AddrPortFrom(src, o.Src.Port()), Dst: netip.AddrPortFrom(dst, o.Dst.Port())})
	}
	return out
}

// localAddrs returns the addresses of this network namespace's
// interfaces.
func localAddrs() (map[netip.Addr]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list this host's addresses: %w", err)
	}
	out := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out[p.Addr().Unmap()] = true
		}
	}
	return out, nil
}
