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
//  0. returns forwarded traffic (unicast to an address not this host's),
//     so routed and containers' own outbound traffic are never gated;
//  1. for IPv6 only, drops packets from v4-mapped (::ffff:0:0/96) and
//     v4-compatible (::/96 but :: and ::1) sources, which stand for IPv4
//     addresses and must never ride IPv4 grants;
//  2. returns, for the filter table to reject, packets carrying the reject
//     mark (the daemon repeats a packet with the mark set to reject it)
//     and TCP segments of connections a revoked certificate opened (which
//     it marks so), and drops other packets of such connections;
//  3. returns packets of tracked connections (ESTABLISHED, RELATED), so
//     open connections outlive their grant, and everything on loopback;
//  4. returns the always-allowed ports, so SSH cannot lock out;
//  5. queues protected TCP SYNs and protected UDP packets to the gate queue
//     (or balances them over GateQueues queues) without bypass (fail
//     closed), and drops (or, with RejectStray, marks for rejection) other
//     protected TCP segments; udp/* leaves out the knock ports;
//  6. queues UDP datagrams to the knock ports whose payload is at least
//     MinLength bytes to the knock queue (within KnockRateLimit), without
//     bypass (with no daemon they are dropped, unanswered), and answers
//     the rest (shorter, or over the limit) as the daemon answers knocks:
//     dropped, or with RejectsKnocks marked for rejection, so that the
//     length of a datagram never shows which ports are knock ports.
//
// "Returns" leaves the packet to the rest of the host's rules. REJECT
// exists only in the filter table, so the filter chain, which INPUT jumps
// to first and FORWARD first for DNAT-ed packets, answers packets carrying
// the reject mark with exactly the kernel's closed-port answer (TCP RST,
// ICMP port unreachable), whether they are bound for the host or, after
// DNAT, for a container.
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

// Jump returns the rule spec of the jumps from PREROUTING (mangle) and
// INPUT (filter) to the chain: "-j CHAIN".
func (c Config) Jump() []string { return []string{"-j", c.Chain} }

// ForwardJump returns the rule spec of FORWARD's jump to the filter chain:
// only packets whose destination was translated (DNAT) can carry the
// reject mark there, so other forwarded traffic never meets the chain.
func (c Config) ForwardJump() []string {
	return []string{"-m", "conntrack", "--ctstate", "DNAT", "-j", c.Chain}
}

// Backstop returns the rule spec mangle POSTROUTING starts with: drop a
// DNAT-ed packet the gate marked for rejection that is about to leave for
// a container, because it got through filter FORWARD unrejected (another
// tool put an accept above the FORWARD jump, as Docker does when it
// starts, until sknockd restores the order). Under reject such a packet
// is then dropped instead of refused, never delivered. --ctdir ORIGINAL
// spares the reset REJECT sends back, which may carry the mark when
// fwmark_reflect is on.
func (c Config) Backstop() []string {
	return []string{"-m", "conntrack", "--ctstate", "DNAT", "--ctdir", "ORIGINAL", "-m", "mark", "--mark", c.markMatch(), "-j", "DROP"}
}

// Rules returns the rule specs of the gate, the mangle table's chain, in
// order, for IPv4 or IPv6: each is the argument list that follows
// "-A CHAIN". c should be valid (Validate).
func (c Config) Rules(ipv6 bool) [][]string {
	rules := [][]string{
		// Forwarded: neither addressed to this host nor to be DNAT-ed by
		// it. Multicast and broadcast stay gated, as INPUT gated them.
		{"-m", "addrtype", "--dst-type", "UNICAST", "-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "RETURN"},
	}
	if ipv6 {
		rules = append(rules, ipv4InIPv6Rules()...)
	}
	rules = append(rules, c.revokeRules()...)
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

// RejectRules returns the rule specs of the filter table's chain: answer
// packets carrying the reject mark as the kernel answers a closed port.
// Only TCP and UDP are ever marked, so only they are matched: a packet of
// another protocol that happens to carry the bit passes on untouched.
func (c Config) RejectRules(ipv6 bool) [][]string {
	mark := c.markMatch()
	return [][]string{
		{"-p", "tcp", "-m", "mark", "--mark", mark, "-j", "REJECT", "--reject-with", "tcp-reset"},
		{"-p", "udp", "-m", "mark", "--mark", mark, "-j", "REJECT", "--reject-with", portUnreachable(ipv6)},
	}
}

// markMatch is the reject mark as the mark match's value/mask.
func (c Config) markMatch() string {
	mark := "0x" + strconv.FormatUint(uint64(c.Mark), 16)
	return mark + "/" + mark
}

// rejectLater marks packets matching m for the filter chain to reject and
// returns them there: MARK does not end the chain, so the return follows.
func (c Config) rejectLater(m []string) [][]string {
	return [][]string{
		append(slices.Clone(m), "-j", "MARK", "--set-xmark", c.markMatch()),
		append(slices.Clone(m), "-j", "RETURN"),
	}
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

// revokeRules end the connections the daemon marked as a revoked
// certificate's, before the ESTABLISHED return: a TCP segment of such a
// connection is marked for the filter chain to answer with a reset (so the
// client's socket closes at once), and a packet the daemon repeated to
// reject it goes there too; anything else of such a connection is dropped.
// Without RevokeMark only the return of rejected packets remains.
func (c Config) revokeRules() [][]string {
	marked := []string{"-m", "mark", "--mark", c.markMatch(), "-j", "RETURN"}
	if c.RevokeMark == 0 {
		return [][]string{marked}
	}
	revoked := "0x" + strconv.FormatUint(uint64(c.RevokeMark), 16)
	revoked += "/" + revoked
	return [][]string{
		{"-p", "tcp", "-m", "connmark", "--mark", revoked, "-j", "MARK", "--set-xmark", c.markMatch()},
		marked,
		{"-m", "connmark", "--mark", revoked, "-j", "DROP"},
	}
}

// match returns the protocol and port match of p.
func match(p PortSpec) []string {
	if p.All {
		return []string{"-p", p.Proto.String()}
	}
	return []string{"-p", p.Proto.String(), "-m", p.Proto.String(), "--dport", p.dport()}
}

// protectRules send p's new connections to the gate queue.
//
// UDP has no ctstate match on purpose: rule 1 has accepted tracked flows
// already, so NEW, INVALID and UNTRACKED datagrams alike go to the gate and
// a NOTRACK rule elsewhere cannot open a hidden port.
func (c Config) protectRules(p PortSpec) [][]string {
	gate := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(int(c.GateQueue))}
	if n := c.gateQueues(); n > 1 {
		last := int(c.GateQueue) + n - 1
		gate = []string{"-j", "NFQUEUE", "--queue-balance", strconv.Itoa(int(c.GateQueue)) + ":" + strconv.Itoa(last)}
	}
	if p.Proto == packet.TCP {
		syn := append(match(p), "-m", "tcp", "--tcp-flags", "SYN,ACK,FIN,RST", "SYN")
		if !p.All {
			// match already loaded -m tcp for --dport.
			syn = append(match(p), "--tcp-flags", "SYN,ACK,FIN,RST", "SYN")
		}
		if c.RejectStray {
			return append([][]string{append(syn, gate...)}, c.rejectLater(match(p))...)
		}
		return [][]string{append(syn, gate...), append(match(p), "-j", "DROP")}
	}
	udp := match(p)
	if p.All {
		udp = []string{"-p", "udp", "-m", "udp", "!", "--dport", portRange(c.KnockFirst, c.KnockLast)}
	}
	return [][]string{append(udp, gate...)}
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
