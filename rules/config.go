package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"sknock/packet"
)

// Config describes the rule set. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// Chain is the chain that holds the rules, in the mangle table (which
	// PREROUTING jumps to first) and in the filter table (which INPUT
	// jumps to first); its helper chains are named after it (Chain-SYN,
	// Chain-GRANT, Chain-REJECT). At most 21 characters of [A-Za-z0-9_-],
	// starting with a letter, and no built-in chain or common target name.
	Chain string
	// Mark is the reject signal bit (or bits) of the packet mark: the
	// daemon repeats (NF_REPEAT) a packet to refuse with Mark set, and the
	// gate's first rules clear it at once and label the packet's new
	// connection for the filter chain to refuse. It lives only between a
	// verdict and the gate's first rule, so other tools' marks can neither
	// undo a refusal nor cause one; they must only not set these bits
	// before the gate (in raw, or above its jump). Must be nonzero.
	Mark uint32
	// AcceptMark is the grant signal bit (or bits): the daemon repeats a
	// packet it grants with AcceptMark set, and the gate's first rule
	// clears it and returns, so that the rest of the mangle table, nat and
	// filter see the packet. Must be nonzero and share no bit with Mark.
	AcceptMark uint32
	// RejectLabel is the conntrack label (0-127, see connlabel.conf(5))
	// that carries a refusal from the gate to the filter chain: a label
	// only sknock sets, which no mark rule can rewrite.
	RejectLabel uint8
	// RevokeMark is deprecated and ignored: revocation ends connections
	// through the kernel's socket destroy and conntrack deletion (package
	// conns), not through a connection mark. It stays so that configs that
	// set gate.revoke_mark still load.
	RevokeMark uint32
	// GateQueue and KnockQueue are the NFQUEUE numbers of the gate (protected
	// ports) and of knocks. They must differ.
	GateQueue, KnockQueue uint16
	// GateQueues spreads the gate over that many consecutive queues from
	// GateQueue (iptables --queue-balance, which hashes each packet's
	// addresses, so one source always meets the same queue), one reader
	// each. At most MaxGateQueues, and KnockQueue may not be among them.
	// Zero or one: GateQueue alone.
	GateQueues int
	// KnockFirst and KnockLast bound the inclusive range of UDP destination
	// ports knocks arrive on; 1 ≤ KnockFirst ≤ KnockLast.
	KnockFirst, KnockLast uint16
	// MinLength is the smallest UDP payload, in bytes, that is taken for a
	// knock; shorter datagrams on the knock ports are left to the kernel
	// (which answers as for any closed port). Zero takes every datagram.
	// At most 65487 so that the IPv6 length match (40+8 header bytes) fits.
	MinLength int
	// AlwaysAllow lists ports accepted before anything else, so that e.g.
	// SSH never locks out. None of them may overlap a Protect port or range
	// (tcp/* and udp/* protect every port not always allowed) or, for UDP,
	// the knock ports. Empty: nothing is always allowed.
	AlwaysAllow []PortSpec
	// Protect lists the hidden ports whose new connections the gate decides.
	// UDP specs may not overlap the knock ports, except udp/*, which
	// excludes them. A tcp/* or udp/* that leaves no port (every port of
	// its protocol always allowed or, for UDP, a knock port) contradicts
	// itself and is refused. Empty: only knocks are queued (sknockd refuses
	// that, as it hides nothing).
	Protect []PortSpec
	// RejectStray answers protected-port TCP segments that are neither a
	// SYN nor part of a tracked connection (ACK, FIN, NULL and Xmas probes,
	// stray segments after a conntrack flush) with a TCP RST, exactly as the
	// kernel answers them on a closed port. Set it together with the
	// daemon's reject policy, so that such probes cannot tell hidden ports
	// from closed ones. The zero value drops them silently, which fits the
	// drop policy. Either way they never reach the service: a listening
	// socket would otherwise answer FIN probes differently from a closed
	// port, and could accept a guessed SYN-cookie ACK without any SYN.
	RejectStray bool
	// RejectKnocks answers the datagrams to the knock ports that are not
	// queued as knocks (shorter than MinLength, or over KnockRateLimit)
	// with an ICMP port unreachable, exactly as the kernel answers a closed
	// port, and asks the daemon to answer the knocks it reads alike (see
	// RejectsKnocks): set it with the daemon's reject and none policies,
	// since knock ports are no services. RejectStray implies it. The zero
	// value (without RejectStray) drops them silently, which fits the drop
	// policy. Either way a datagram's length never shows a knock port.
	RejectKnocks bool
	// KnockRateLimit, when not empty, limits knocks per source address with
	// iptables' hashlimit ("20/second", "600/minute"; units second, minute,
	// hour, day); knocks over the limit are dropped before userspace sees
	// them. Empty: no limit.
	KnockRateLimit string
	// Forwarding tells the rule set that this host forwards packets (IPv4
	// or IPv6 forwarding is on for some interface), so that a connection
	// to a protected port may be forwarded, DNAT-ed to a container or a
	// VM: one without a local socket to destroy, which revocation ends by
	// labelling its conntrack entry (see Labels). Keeper.Apply sets it from
	// the kernel's settings when it has a probe (SystemKeeper's reads
	// HostForwards), and Keeper.Refit follows their changes.
	Forwarding bool
}

// DefaultConfig returns the configuration of DESIGN.md's defaults:
// chain SKNOCK, reject signal 0x40000000, grant signal 0x20000000, reject
// label 127, knock queue 100 on UDP ports 10000–60000
// with at least 300 payload bytes, gate queue 101, tcp/22 always allowed
// and nothing protected.
func DefaultConfig() Config {
	return Config{
		Chain:       "SKNOCK",
		Mark:        DefaultMark,
		AcceptMark:  DefaultAcceptMark,
		RejectLabel: DefaultRejectLabel,
		GateQueue:   101,
		KnockQueue:  100,
		KnockFirst:  10000,
		KnockLast:   60000,
		MinLength:   300,
		AlwaysAllow: []PortSpec{{Proto: packet.TCP, First: 22, Last: 22}},
	}
}

// Defaults of the signal bits and the reject label: high bits, which
// policy-routing marks (small numbers) and connmarks rarely use.
const (
	DefaultMark        = 0x40000000
	DefaultAcceptMark  = 0x20000000
	DefaultRejectLabel = 127
)

// MaxRejectLabel is the highest conntrack label.
const MaxRejectLabel = 127

// ConfigError is the error Validate returns: which field is wrong, the
// offending value, and why.
type ConfigError struct {
	Field  string // the Config field, e.g. "Protect"
	Value  string // the offending value as text, e.g. "udp/12000"
	Reason string // why it is wrong, e.g. "overlaps always-allowed tcp/22"
}

// Error returns "rules: Field Value: Reason".
func (e *ConfigError) Error() string {
	return fmt.Sprintf("rules: %s %s: %s", e.Field, e.Value, e.Reason)
}

// maxMinLength keeps MinLength+48 (IPv6 and UDP headers) within the
// 16-bit length match.
const maxMinLength = 65535 - ipv6UDPHeaders

// maxChainLen is iptables' limit on chain names (XT_EXTENSION_MAXNAMELEN-1,
// 28) less the longest helper chain's suffix.
const maxChainLen = 28 - maxSuffixLen

var chainName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// reservedChains are built-in chains and targets iptables refuses or
// misreads as chain names.
var reservedChains = map[string]bool{
	"INPUT": true, "OUTPUT": true, "FORWARD": true, "PREROUTING": true, "POSTROUTING": true,
	"ACCEPT": true, "DROP": true, "QUEUE": true, "RETURN": true, "REJECT": true,
	"NFQUEUE": true, "LOG": true, "MARK": true, "CONNMARK": true, "CT": true,
	"NOTRACK": true, "TRACE": true, "DNAT": true, "SNAT": true, "MASQUERADE": true,
}

var rateLimit = regexp.MustCompile(`^[1-9][0-9]{0,8}/(second|minute|hour|day)$`)

// Validate reports the first problem of c as a *ConfigError, or nil.
func (c Config) Validate() error {
	bad := func(field, value, reason string) error {
		return &ConfigError{Field: field, Value: value, Reason: reason}
	}
	if err := c.validateChain(); err != nil {
		return err
	}
	switch {
	case c.Mark == 0:
		return bad("Mark", "0", "must be nonzero")
	case c.AcceptMark == 0:
		return bad("AcceptMark", "0", "must be nonzero")
	case c.AcceptMark&c.Mark != 0:
		return bad("AcceptMark", fmt.Sprintf("%#x", c.AcceptMark), fmt.Sprintf("shares a bit with the reject mark %#x", c.Mark))
	case c.RejectLabel > MaxRejectLabel:
		return bad("RejectLabel", fmt.Sprint(c.RejectLabel), fmt.Sprintf("must be 0-%d", MaxRejectLabel))
	case c.GateQueue == c.KnockQueue:
		return bad("GateQueue", fmt.Sprint(c.GateQueue), "must differ from KnockQueue")
	case c.GateQueues < 0 || c.GateQueues > MaxGateQueues:
		return bad("GateQueues", fmt.Sprint(c.GateQueues), fmt.Sprintf("must be 1-%d", MaxGateQueues))
	case int(c.GateQueue)+c.gateQueues()-1 > 65535:
		return bad("GateQueues", fmt.Sprint(c.GateQueues), fmt.Sprintf("queues %d-%d go past 65535", c.GateQueue, int(c.GateQueue)+c.gateQueues()-1))
	case c.KnockQueue > c.GateQueue && int(c.KnockQueue) < int(c.GateQueue)+c.gateQueues():
		return bad("GateQueues", fmt.Sprint(c.GateQueues), fmt.Sprintf("gate queues %d-%d take in KnockQueue %d", c.GateQueue, int(c.GateQueue)+c.gateQueues()-1, c.KnockQueue))
	case c.KnockFirst == 0 || c.KnockFirst > c.KnockLast:
		return bad("KnockFirst", fmt.Sprintf("%d-%d", c.KnockFirst, c.KnockLast), "knock port range must satisfy 1 ≤ first ≤ last")
	case c.MinLength < 0 || c.MinLength > maxMinLength:
		return bad("MinLength", fmt.Sprint(c.MinLength), fmt.Sprintf("must be 0-%d UDP payload bytes", maxMinLength))
	case c.KnockRateLimit != "" && !rateLimit.MatchString(c.KnockRateLimit):
		return bad("KnockRateLimit", fmt.Sprintf("%q", c.KnockRateLimit), "want N/second, N/minute, N/hour or N/day")
	}
	knock := c.knockPorts()
	for _, field := range []struct {
		name  string
		specs []PortSpec
	}{{"AlwaysAllow", c.AlwaysAllow}, {"Protect", c.Protect}} {
		for _, p := range field.specs {
			if err := checkSpec(p); err != nil {
				return bad(field.name, p.String(), err.Error())
			}
		}
	}
	for _, a := range c.AlwaysAllow {
		for _, p := range c.Protect {
			// tcp/* and udp/* mean every port not always allowed.
			if !p.All && a.Overlaps(p) {
				return bad("Protect", p.String(), "overlaps always-allowed "+a.String())
			}
		}
		if a.Overlaps(knock) {
			return bad("AlwaysAllow", a.String(), "overlaps the knock ports "+knock.String()+"; knocks there would never be heard")
		}
	}
	for _, p := range c.Protect {
		if !p.All && p.Overlaps(knock) {
			return bad("Protect", p.String(), "overlaps the knock ports "+knock.String())
		}
		if p.All && coversEveryPort(c.excluded(p.Proto)) {
			return bad("Protect", p.String(), c.protectsNothing(p.Proto))
		}
	}
	return nil
}

// excluded returns the ports of proto that tcp/* or udp/* leave out: the
// always-allowed ones and, for UDP, the knock ports.
func (c Config) excluded(proto packet.Proto) []PortSpec {
	var out []PortSpec
	for _, a := range c.AlwaysAllow {
		if a.Proto == proto {
			out = append(out, a)
		}
	}
	if proto == packet.UDP {
		out = append(out, c.knockPorts())
	}
	return out
}

// protectsNothing explains why tcp/* or udp/* leaves no port of proto.
func (c Config) protectsNothing(proto packet.Proto) string {
	var why []string
	if proto == packet.UDP {
		why = append(why, "a knock port ("+c.knockPorts().String()+")")
	}
	var allowed []string
	for _, a := range c.AlwaysAllow {
		if a.Proto == proto {
			allowed = append(allowed, a.String())
		}
	}
	if len(allowed) > 0 {
		why = append(why, "always allowed ("+strings.Join(allowed, ", ")+")")
	}
	return fmt.Sprintf("protects nothing: every %s port is %s", proto, strings.Join(why, " or "))
}

// coversEveryPort reports whether specs together hold every port 1–65535.
// They are all of one protocol.
func coversEveryPort(specs []PortSpec) bool {
	specs = slices.Clone(specs)
	slices.SortFunc(specs, func(a, b PortSpec) int { return int(a.First) - int(b.First) })
	next := 1 // the lowest port not yet covered
	for _, s := range specs {
		if s.All {
			return true
		}
		if int(s.First) > next {
			return false
		}
		next = max(next, int(s.Last)+1)
	}
	return next > 65535
}

// MaxGateQueues bounds Config.GateQueues.
const MaxGateQueues = 16

// gateQueues returns how many gate queues c has: GateQueues, at least one.
func (c Config) gateQueues() int { return max(c.GateQueues, 1) }

// GateQueueNumbers returns the gate's queue numbers, GateQueue first.
func (c Config) GateQueueNumbers() []uint16 {
	qs := make([]uint16, c.gateQueues())
	for i := range qs {
		qs[i] = c.GateQueue + uint16(i)
	}
	return qs
}

// validateChain checks c.Chain alone, which is all Remove needs.
func (c Config) validateChain() error {
	bad := func(reason string) error {
		return &ConfigError{Field: "Chain", Value: fmt.Sprintf("%q", c.Chain), Reason: reason}
	}
	switch {
	case len(c.Chain) > maxChainLen:
		return bad(fmt.Sprintf("longer than %d characters (its helper chains add %q)", maxChainLen, rejectSuffix))
	case !chainName.MatchString(c.Chain):
		return bad("must start with a letter and hold only A-Z a-z 0-9 _ -")
	case reservedChains[c.Chain]:
		return bad("is a built-in chain or target name")
	}
	return nil
}

// checkSpec checks a PortSpec built by hand rather than by ParsePortSpec.
func checkSpec(p PortSpec) error {
	switch {
	case !p.Proto.Valid():
		return fmt.Errorf("protocol %s must be tcp or udp", p.Proto)
	case p.All:
		return nil
	case p.First == 0 || p.First > p.Last:
		return fmt.Errorf("port range must satisfy 1 ≤ first ≤ last")
	}
	return nil
}

// knockPorts returns the knock port range as a UDP PortSpec.
func (c Config) knockPorts() PortSpec {
	return PortSpec{Proto: packet.UDP, First: c.KnockFirst, Last: c.KnockLast}
}
