// Package rules owns sknock's static firewall rules: the rule set of
// DESIGN.md as data (Config.Rules, Config.RejectRules), applied and removed
// idempotently for IPv4 and IPv6 through the IPTables interface (Apply,
// Remove, ApplyAll, RemoveAll), and rendered as an equivalent shell script
// (Config.Script).
//
// The rules change only with the configuration, never per grant, and
// always whole (each table's part is one iptables-restore transaction); a
// Keeper puts them back when another tool removes or outranks them.
//
// The gate sits in the mangle table's PREROUTING, before any DNAT: a
// packet to a port published from a container (Docker, Podman, libvirt or
// any DNAT to a local bridge) is gated by the port the client addressed,
// although it is forwarded and never passes INPUT. In order, the mangle
// chain, which PREROUTING jumps to first,
//
//  0. sends a packet the daemon repeated (NF_REPEAT) with a signal bit to
//     the grant chain (the bit cleared, back to PREROUTING after the
//     jump: the rest of the host's rules see the packet) or the reject
//     chain (the bit cleared, the new connection labelled for the filter
//     chain to refuse); the bits live only that long, so no other tool's
//     mark rule after the jump can undo or cause a decision;
//  1. returns forwarded traffic (unicast to an address neither this
//     host's nor one of its anycast addresses), so routed and containers'
//     own outbound traffic are never gated;
//  2. for IPv6 only, drops packets from v4-mapped (::ffff:0:0/96) and
//     v4-compatible (::/96 but :: and ::1) sources, which stand for IPv4
//     addresses and must never ride IPv4 grants;
//  3. sends every TCP SYN to the SYN chain, which returns loopback and
//     the always-allowed ports and queues the protected ports to the gate
//     queue (or balances them over GateQueues queues) without bypass
//     (fail closed), whatever the conntrack state of the SYN's tuple;
//  4. returns packets of tracked connections (ESTABLISHED, RELATED), so
//     open connections outlive their grant, and everything on loopback;
//  5. returns the always-allowed ports, so SSH cannot lock out;
//  6. drops (or, with RejectStray, sends to the reject chain) the other
//     protected TCP segments, and queues protected UDP packets to the
//     gate; udp/* leaves out the knock ports;
//  7. queues UDP datagrams to the knock ports whose payload is at least
//     MinLength bytes to the knock queue (within KnockRateLimit), without
//     bypass (with no daemon they are dropped, unanswered), and answers
//     the rest (shorter, or over the limit) as the daemon answers knocks:
//     dropped, or with RejectsKnocks sent to the reject chain, so that the
//     length of a datagram never shows which ports are knock ports.
//
// "Returns" leaves the packet to the rest of the host's rules. REJECT
// exists only in the filter table, so the filter chain, which INPUT jumps
// to first and FORWARD first for DNAT-ed packets, answers connections
// carrying the reject label (a conntrack label only sknock sets) with
// exactly the kernel's closed-port answer (TCP RST, ICMP port
// unreachable), whether they are bound for the host or, after DNAT, for a
// container; with RejectStray it resets stray protected TCP segments that
// have no connection to label; and it drops, as a safety net, what is
// delivered locally to a protected port at an address the gate took for
// forwarded.
package rules

import (
	"sknock/packet"
	"slices"
	"strconv"
)

// Header bytes in front of a UDP payload, which the length match counts.
const (
	ipv4UDPHeaders = 20 + 8 // IPv4 header without options, UDP header
	ipv6UDPHeaders = 40 + 8 // IPv6 header without extensions, UDP header
)

// RejectsKnocks reports whether datagrams to the knock ports are answered
// as on a closed port (ICMP port unreachable) rather than dropped: with
// RejectKnocks, or with RejectStray (the reject policy). The rules answer
// those they do not queue so; the daemon must answer the knocks it reads
// the same way, so that no datagram's length shows a knock port.
func (c Config) RejectsKnocks() bool { return c.RejectKnocks || c.RejectStray }

// Names of the helper chains, each the chain's name and a suffix: the
// protected SYNs (synSuffix), and the re-entry of packets the daemon
// repeated to grant (grantSuffix) or to refuse (rejectSuffix) them.
const (
	synSuffix    = "-SYN"
	grantSuffix  = "-GRANT"
	rejectSuffix = "-REJECT"
	// maxSuffixLen is the longest suffix, which Chain's length must leave
	// room for.
	maxSuffixLen = len(rejectSuffix)
)

// SynChain, GrantChain and RejectChain name the mangle table's helper
// chains (see the package doc).
func (c Config) SynChain() string    { return c.Chain + synSuffix }
func (c Config) GrantChain() string  { return c.Chain + grantSuffix }
func (c Config) RejectChain() string { return c.Chain + rejectSuffix }

// Jump returns the rule spec of the jumps from PREROUTING (mangle) and
// INPUT (filter) to the chain: "-j CHAIN".
func (c Config) Jump() []string { return []string{"-j", c.Chain} }

// ForwardJump returns the rule spec of FORWARD's jump to the filter chain:
// only packets whose destination was translated (DNAT) can carry the
// reject label there, so other forwarded traffic never meets the chain.
func (c Config) ForwardJump() []string {
	return []string{"-m", "conntrack", "--ctstate", "DNAT", "-j", c.Chain}
}

// Backstop returns the rule spec mangle POSTROUTING starts with: drop a
// DNAT-ed packet whose connection carries the reject label and that is
// about to leave for a container, because it got through filter FORWARD
// unrejected (another tool put an accept above the FORWARD jump, as Docker
// does when it starts, until sknockd restores the order). Under reject
// such a packet is then dropped instead of refused, never delivered.
// --ctdir ORIGINAL spares the reset REJECT sends back.
func (c Config) Backstop() []string {
	return []string{"-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL", "-m", "connlabel", "--label", c.label(), "-j", "DROP"}
}

// forwarded matches unicast packets to an address that is neither this
// host's nor one of its anycast addresses (which the kernel delivers to
// local sockets, e.g. IPv6's subnet-router anycast with forwarding on).
func forwarded() []string {
	return []string{"-m", "addrtype", "--dst-type", "UNICAST", "-m", "addrtype", "!", "--dst-type", "LOCAL,ANYCAST"}
}

// tcpSYN is the match of a TCP SYN (no ACK, FIN or RST), after a match
// that loaded -m tcp.
var tcpSYN = []string{"--tcp-flags", "SYN,ACK,FIN,RST", "SYN"}

// Rules returns the rule specs of the gate, the mangle table's chain, in
// order, for IPv4 or IPv6: each is the argument list that follows
// "-A CHAIN". c should be valid (Validate).
func (c Config) Rules(ipv6 bool) [][]string {
	rules := [][]string{
		// A packet the daemon repeated (NF_REPEAT) comes back here with a
		// signal bit: the bit is cleared at once, and the verdict carried
		// out, before any other rule (see GrantRules and RejectMarkRules).
		{"-m", "mark", "--mark", maskMatch(c.AcceptMark), "-g", c.GrantChain()},
		{"-m", "mark", "--mark", maskMatch(c.Mark), "-g", c.RejectChain()},
		// Forwarded: neither addressed to this host nor to be DNAT-ed by
		// it. Multicast and broadcast stay gated, as INPUT gated them.
		append(forwarded(), "-j", "RETURN"),
	}
	if ipv6 {
		rules = append(rules, ipv4InIPv6Rules()...)
	}
	if c.protectsTCP() {
		// Every SYN meets the gate's ports before the ESTABLISHED
		// return: a SYN on a reused tuple (its connection reset, in CLOSE
		// or TIME_WAIT) is no part of what was granted.
		rules = append(rules, []string{"-p", "tcp", "-m", "tcp", "--tcp-flags", "SYN,ACK,FIN,RST", "SYN", "-j", c.SynChain()})
	}
	rules = append(rules,
		[]string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"},
		// Loopback is the host talking to itself: hiding a service from
		// its own host protects nothing, and tcp/* would break every local
		// client (databases, resolvers, agents).
		[]string{"-i", "lo", "-j", "RETURN"},
	)
	for _, p := range c.AlwaysAllow {
		rules = append(rules, append(match(p), "-j", "RETURN"))
	}
	for _, p := range c.Protect {
		rules = append(rules, c.protectRules(p)...)
	}
	return append(rules, c.knockRules(ipv6)...)
}

// SynRules returns the rule specs of the SYN chain, which the gate jumps
// to for every TCP SYN whatever its conntrack state: loopback and the
// always-allowed ports return, the protected ports are queued to the gate.
func (c Config) SynRules() [][]string {
	rules := [][]string{{"-i", "lo", "-j", "RETURN"}}
	for _, p := range c.AlwaysAllow {
		if p.Proto == packet.TCP {
			rules = append(rules, append(match(p), "-j", "RETURN"))
		}
	}
	for _, p := range c.Protect {
		if p.Proto == packet.TCP {
			rules = append(rules, append(match(p), c.gateTarget()...))
		}
	}
	return rules
}

// GrantRules returns the rule specs of the grant chain, where a packet the
// daemon repeated to grant it comes back: the signal bit is cleared, and
// the chain's end returns to PREROUTING right after the jump (the main
// chain went there with -g), so the rest of the mangle table, nat and
// filter see the packet as they would without sknock.
func (c Config) GrantRules() [][]string {
	return [][]string{{"-j", "MARK", "--set-xmark", "0x0/" + hex(c.AcceptMark)}}
}

// Labels reports whether the rule set uses the reject label (a conntrack
// label). It does when something is refused with a closed-port answer
// (RejectsKnocks: the label carries the refusal to the filter chain's
// REJECT), when a UDP port is protected (a UDP flow is ended by
// labelling its entry, since its local socket serves every client), and
// when the host forwards packets (Forwarding: a forwarded connection has
// no local socket to destroy). Otherwise every connection a grant lets in
// is ended through its socket, nothing is ever labelled, and no rule
// names a label: while any rule of a network namespace does, the kernel
// gives every connection it tracks there a labels extension, which cost
// a granted SYN flood (bench row 3b) about 9 % of its rate here.
func (c Config) Labels() bool {
	return c.RejectsKnocks() || c.Forwarding ||
		slices.ContainsFunc(c.Protect, func(p PortSpec) bool { return p.Proto == packet.UDP })
}

// RejectMarkRules returns the rule specs of the reject chain, where a
// packet to refuse comes (repeated by the daemon, or sent by a rule): the
// signal bit is cleared, and its new connection gets the reject label,
// which the filter chain answers with the kernel's closed-port answer.
// A packet that cannot carry the label (no connection: a stray TCP
// segment conntrack calls INVALID, or one NOTRACK exempted) is left to the
// filter chain's stateless refusal when it is a stray TCP segment, and
// dropped otherwise, as is a packet of an older tracked connection (a
// label would outlive the packet): a refusal is never undone. Without
// Labels nothing is refused with an answer, and the chain drops.
func (c Config) RejectMarkRules() [][]string {
	if !c.Labels() {
		return [][]string{{"-j", "MARK", "--set-xmark", "0x0/" + hex(c.Mark)}, {"-j", "DROP"}}
	}
	return [][]string{
		{"-j", "MARK", "--set-xmark", "0x0/" + hex(c.Mark)},
		{"-m", "conntrack", "--ctstate", "NEW", "-m", "connlabel", "--label", c.label(), "--set", "-j", "RETURN"},
		{"-p", "tcp", "-m", "tcp", "!", "--tcp-flags", "SYN,ACK,FIN,RST", "SYN", "-m", "conntrack", "--ctstate", "INVALID,UNTRACKED", "-j", "RETURN"},
		{"-j", "DROP"},
	}
}

// RejectRules returns the rule specs of the filter table's chain: answer
// the connections carrying the reject label (with Labels) as the kernel
// answers a closed port; with RejectStray, answer alike the stray
// protected TCP segments that have no connection to label; and drop, as a
// safety net, a packet to a protected port whose destination the gate
// took for forwarded although it is being delivered here. Only TCP and
// UDP are ever labelled, so only they are matched.
func (c Config) RejectRules(ipv6 bool) [][]string {
	var rules [][]string
	if c.Labels() {
		label := c.label()
		rules = [][]string{
			{"-p", "tcp", "-m", "connlabel", "--label", label, "-j", "REJECT", "--reject-with", "tcp-reset"},
			{"-p", "udp", "-m", "connlabel", "--label", label, "-j", "REJECT", "--reject-with", portUnreachable(ipv6)},
		}
	}
	if c.RejectStray {
		for _, p := range c.Protect {
			if p.Proto == packet.TCP {
				stray := append(match(p), "!")
				if p.All {
					stray = append(stray[:len(stray)-1], "-m", "tcp", "!")
				}
				stray = append(stray, tcpSYN...)
				rules = append(rules, append(append(stray, "-m", "conntrack", "--ctstate", "INVALID,UNTRACKED"),
					"-j", "REJECT", "--reject-with", "tcp-reset"))
			}
		}
	}
	// Every packet to this host crosses this chain, so the cheap tests
	// come first: the port (a packet to another port stops there), then
	// the one address-type lookup a local packet fails.
	for _, p := range c.Protect {
		net := append(match(p), "-m", "addrtype", "!", "--dst-type", "LOCAL,ANYCAST", "-m", "addrtype", "--dst-type", "UNICAST")
		rules = append(rules, append(net, "-m", "conntrack", "!", "--ctstate", "DNAT", "-j", "DROP"))
	}
	return rules
}

// label is the reject label's number as the connlabel match takes it.
func (c Config) label() string { return strconv.Itoa(int(c.RejectLabel)) }

// hex spells v as iptables-save does.
func hex(v uint32) string { return "0x" + strconv.FormatUint(uint64(v), 16) }

// maskMatch is v/v: every bit of v set.
func maskMatch(v uint32) string { return hex(v) + "/" + hex(v) }

// protectsTCP reports whether any protected port is TCP.
func (c Config) protectsTCP() bool {
	return slices.ContainsFunc(c.Protect, func(p PortSpec) bool { return p.Proto == packet.TCP })
}

// gateTarget is the NFQUEUE target of the gate queue (or queues), without
// bypass: with no reader bound the kernel drops (fail closed).
func (c Config) gateTarget() []string {
	if n := c.gateQueues(); n > 1 {
		last := int(c.GateQueue) + n - 1
		return []string{"-j", "NFQUEUE", "--queue-balance", strconv.Itoa(int(c.GateQueue)) + ":" + strconv.Itoa(last)}
	}
	return []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(c.GateQueue))}
}

// rejectLater sends packets matching m to the reject chain, which labels
// them for the filter chain to refuse.
func (c Config) rejectLater(m []string) [][]string {
	return [][]string{append(slices.Clone(m), "-g", c.RejectChain())}
}

// ipv4InIPv6Rules drop IPv6 packets whose source stands for an IPv4
// address: v4-mapped (::ffff:0:0/96), which Linux delivers to UDP sockets
// and a dual-stack service answers over IPv4, and v4-compatible (::/96,
// deprecated). No genuine IPv6 packet comes from either, and letting one
// in would let spoofed IPv6 stand in for an IPv4 client. They come first,
// before the ESTABLISHED accept, so that no such packet is ever accepted,
// not even on a flow tracked before the rules. The compatible range leaves
// out :: (the source of duplicate address detection and MLD, which the
// host must still hear) and ::1 (loopback); the gate refuses :: for TCP
// and UDP itself. Spelled as iptables-save prints them.
func ipv4InIPv6Rules() [][]string {
	return [][]string{
		{"-s", "::ffff:0.0.0.0/96", "-j", "DROP"},
		{"-m", "iprange", "--src-range", "::2-::255.255.255.255", "-j", "DROP"},
	}
}

// match returns the protocol and port match of p.
func match(p PortSpec) []string {
	if p.All {
		return []string{"-p", p.Proto.String()}
	}
	return []string{"-p", p.Proto.String(), "-m", p.Proto.String(), "--dport", p.dport()}
}

// protectRules handle what is left of p's packets after the SYN chain:
// TCP segments that are neither a SYN nor of a tracked connection are
// dropped or, with RejectStray, refused; UDP datagrams go to the gate.
//
// UDP has no ctstate match on purpose: the ESTABLISHED return has accepted
// tracked flows already, so NEW, INVALID and UNTRACKED datagrams alike go
// to the gate and a NOTRACK rule elsewhere cannot open a hidden port.
func (c Config) protectRules(p PortSpec) [][]string {
	if p.Proto == packet.TCP {
		if c.RejectStray {
			return c.rejectLater(match(p))
		}
		return [][]string{append(match(p), "-j", "DROP")}
	}
	udp := match(p)
	if p.All {
		udp = []string{"-p", "udp", "-m", "udp", "!", "--dport", portRange(c.KnockFirst, c.KnockLast)}
	}
	return [][]string{append(udp, c.gateTarget()...)}
}

// knockRules queue long enough datagrams on the knock ports to the knock
// queue, within the rate limit, and answer every other datagram to the
// knock ports as the daemon answers knocks (see RejectsKnocks): a scanner
// gets the same answer whatever the length, the same as from any other
// hidden or closed port.
func (c Config) knockRules(ipv6 bool) [][]string {
	headers := ipv4UDPHeaders
	if ipv6 {
		headers = ipv6UDPHeaders
	}
	ports := []string{"-p", "udp", "-m", "udp", "--dport", portRange(c.KnockFirst, c.KnockLast)}
	knock := append(append([]string(nil), ports...),
		"-m", "length", "--length", strconv.Itoa(c.MinLength+headers)+":65535")
	// No --queue-bypass: with no reader bound (before sknockd starts, or
	// between a stop and the next start) the kernel drops knocks rather
	// than answering them as a closed port, so they stay unanswered.
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(c.KnockQueue))}
	knock = append(knock, c.knockLimit(ipv6)...)
	if c.RejectsKnocks() {
		return append([][]string{append(knock, queue...)}, c.rejectLater(ports)...)
	}
	return [][]string{append(knock, queue...), append(ports, "-j", "DROP")}
}

// portUnreachable is REJECT's name for the kernel's closed-port answer to
// UDP in the family.
func portUnreachable(ipv6 bool) string {
	if ipv6 {
		return "icmp6-port-unreachable"
	}
	return "icmp-port-unreachable"
}
