package rules_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/rules"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// specs parses port specs or fails the test.
func specs(t testing.TB, ss ...string) []rules.PortSpec {
	t.Helper()
	var out []rules.PortSpec
	for _, s := range ss {
		p, err := rules.ParsePortSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// designConfig is DESIGN.md's example: the defaults protecting tcp/2000,
// tcp/3000 and udp/8000.
func designConfig(t testing.TB) rules.Config {
	c := rules.DefaultConfig()
	c.Protect = specs(t, "tcp/2000", "tcp/3000", "udp/8000")
	return c
}

// split turns rule lines back into argument lists, for readable tables.
func split(lines ...string) [][]string {
	out := make([][]string, len(lines))
	for i, l := range lines {
		out[i] = strings.Fields(l)
	}
	return out
}

const (
	// Packets the daemon repeated come back with a signal bit: first.
	grantBack  = "-m mark --mark 0x20000000/0x20000000 -g SKNOCK-GRANT"
	rejectBack = "-m mark --mark 0x40000000/0x40000000 -g SKNOCK-REJECT"
	// Forwarded unicast (not addressed to this host nor an anycast
	// address of it) is returned next.
	forwarded = "-m addrtype --dst-type UNICAST -m addrtype ! --dst-type LOCAL,ANYCAST -j RETURN"
	// IPv6 only: v4-mapped and v4-compatible sources are dropped next.
	dropMapped     = "-s ::ffff:0.0.0.0/96 -j DROP"
	dropCompatible = "-m iprange --src-range ::2-::255.255.255.255 -j DROP"
	// Every TCP SYN meets the SYN chain before the ESTABLISHED return.
	synJump     = "-p tcp -m tcp --tcp-flags SYN,ACK,FIN,RST SYN -j SKNOCK-SYN"
	established = "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
	loopback    = "-i lo -j RETURN"
	allowSSH    = "-p tcp -m tcp --dport 22 -j RETURN"
	// The filter chain's rules.
	rejectTCP  = "-p tcp -m connlabel --label 127 -j REJECT --reject-with tcp-reset"
	rejectUDP4 = "-p udp -m connlabel --label 127 -j REJECT --reject-with icmp-port-unreachable"
	rejectUDP6 = "-p udp -m connlabel --label 127 -j REJECT --reject-with icmp6-port-unreachable"
	knock4     = "-p udp -m udp --dport 10000:60000 -m length --length 328:65535 -j NFQUEUE --queue-num 100"
	knock6     = "-p udp -m udp --dport 10000:60000 -m length --length 348:65535 -j NFQUEUE --queue-num 100"
	// Datagrams to the knock ports that are not queued (too short, or
	// over the rate limit) get the answer knocks get: silence, or with
	// RejectKnocks or RejectStray the closed-port ICMP (labelled by the
	// reject chain, and refused by the filter chain).
	knockDrop   = "-p udp -m udp --dport 10000:60000 -j DROP"
	knockReject = "-p udp -m udp --dport 10000:60000 -g SKNOCK-REJECT"
)

// head is the start of every gate chain of the design configuration: the
// signal returns, the forwarded return and, for IPv6, the source drops.
func head(ipv6 bool) []string {
	if ipv6 {
		return []string{grantBack, rejectBack, forwarded, dropMapped, dropCompatible}
	}
	return []string{grantBack, rejectBack, forwarded}
}

// lines joins groups of rule lines.
func lines(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func TestRules(t *testing.T) {
	tests := []struct {
		name string
		give func(*rules.Config)
		ipv6 bool
		want [][]string
	}{
		{
			name: "design example v4",
			give: func(*rules.Config) {},
			want: split(lines(head(false), []string{synJump, established, loopback, allowSSH,
				"-p tcp -m tcp --dport 2000 -j DROP",
				"-p tcp -m tcp --dport 3000 -j DROP",
				"-p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101",
				knock4, knockDrop})...),
		},
		{
			name: "design example v6",
			give: func(*rules.Config) {},
			ipv6: true,
			want: split(lines(head(true), []string{synJump, established, loopback, allowSSH,
				"-p tcp -m tcp --dport 2000 -j DROP",
				"-p tcp -m tcp --dport 3000 -j DROP",
				"-p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101",
				knock6, knockDrop})...),
		},
		{
			name: "udp all leaves out the knock ports, no SYN chain jump without TCP",
			give: func(c *rules.Config) {
				c.Protect = specs(t, "udp/*")
				c.AlwaysAllow = specs(t, "tcp/22", "udp/53")
			},
			want: split(lines(head(false), []string{established, loopback, allowSSH, "-p udp -m udp --dport 53 -j RETURN",
				"-p udp -m udp ! --dport 10000:60000 -j NFQUEUE --queue-num 101",
				knock4, knockDrop})...),
		},
		{
			name: "tcp all, ranges, stray reset, one knock port, signal bits, queues",
			give: func(c *rules.Config) {
				c.Protect = specs(t, "tcp/*", "udp/7000-7100")
				c.AlwaysAllow = specs(t, "tcp/22", "udp/5000-5010")
				c.RejectStray = true
				c.KnockFirst, c.KnockLast = 4444, 4444
				c.Mark, c.AcceptMark = 0x40, 0x80
				c.GateQueue, c.KnockQueue = 7, 8
				c.MinLength = 0
			},
			want: split("-m mark --mark 0x80/0x80 -g SKNOCK-GRANT", "-m mark --mark 0x40/0x40 -g SKNOCK-REJECT", forwarded,
				synJump, established, loopback, allowSSH, "-p udp -m udp --dport 5000:5010 -j RETURN",
				"-p tcp -g SKNOCK-REJECT",
				"-p udp -m udp --dport 7000:7100 -j NFQUEUE --queue-num 7",
				"-p udp -m udp --dport 4444 -m length --length 28:65535 -j NFQUEUE --queue-num 8",
				"-p udp -m udp --dport 4444 -g SKNOCK-REJECT"),
		},
		{
			name: "gate balanced over four queues",
			give: func(c *rules.Config) {
				c.Protect = specs(t, "tcp/2000", "udp/*")
				c.GateQueues = 4
			},
			ipv6: true,
			want: split(lines(head(true), []string{synJump, established, loopback, allowSSH,
				"-p tcp -m tcp --dport 2000 -j DROP",
				"-p udp -m udp ! --dport 10000:60000 -j NFQUEUE --queue-balance 101:104",
				knock6, knockDrop})...),
		},
		{
			name: "one gate queue given explicitly",
			give: func(c *rules.Config) {
				c.Protect = specs(t, "udp/8000")
				c.GateQueues = 1
			},
			want: split(lines(head(false), []string{established, loopback, allowSSH,
				"-p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101",
				knock4, knockDrop})...),
		},
		{
			name: "knock rate limit",
			give: func(c *rules.Config) {
				c.Protect = nil
				c.AlwaysAllow = nil
				c.KnockRateLimit = "20/second"
			},
			ipv6: true,
			want: split(lines(head(true), []string{established, loopback,
				"-p udp -m udp --dport 10000:60000 -m length --length 348:65535 -m hashlimit --hashlimit-upto 20/second --hashlimit-mode srcip --hashlimit-name sknock_3916f3ea --hashlimit-srcmask 64 --hashlimit-htable-size 65536 --hashlimit-htable-max 262144 --hashlimit-htable-expire 250 --hashlimit-htable-gcinterval 250 -j NFQUEUE --queue-num 100",
				knockDrop})...),
		},
		{
			name: "knock rate limit, knocks rejected",
			give: func(c *rules.Config) {
				c.Protect = nil
				c.AlwaysAllow = nil
				c.KnockRateLimit = "20/second"
				c.RejectKnocks = true
			},
			want: split(lines(head(false), []string{established, loopback,
				"-p udp -m udp --dport 10000:60000 -m length --length 328:65535 -m hashlimit --hashlimit-upto 20/second --hashlimit-mode srcip --hashlimit-name sknock_482c1550 --hashlimit-htable-size 65536 --hashlimit-htable-max 262144 --hashlimit-htable-expire 250 --hashlimit-htable-gcinterval 250 -j NFQUEUE --queue-num 100",
				knockReject})...),
		},
		{
			name: "knocks rejected (policy none), strays dropped",
			give: func(c *rules.Config) { c.RejectKnocks = true },
			ipv6: true,
			want: split(lines(head(true), []string{synJump, established, loopback, allowSSH,
				"-p tcp -m tcp --dport 2000 -j DROP",
				"-p tcp -m tcp --dport 3000 -j DROP",
				"-p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101",
				knock6, knockReject})...),
		},
		{
			name: "reject stray rejects knocks too (policy reject)",
			give: func(c *rules.Config) { c.RejectStray = true },
			want: split(lines(head(false), []string{synJump, established, loopback, allowSSH,
				"-p tcp -m tcp --dport 2000 -g SKNOCK-REJECT",
				"-p tcp -m tcp --dport 3000 -g SKNOCK-REJECT",
				"-p udp -m udp --dport 8000 -j NFQUEUE --queue-num 101",
				knock4, knockReject})...),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := designConfig(t)
			tt.give(&c)
			if err := c.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if diff := cmp.Diff(tt.want, c.Rules(tt.ipv6)); diff != "" {
				t.Errorf("Rules(%v) (-want +got):\n%s", tt.ipv6, diff)
			}
		})
	}
}

// TestRulesNeverEndInFilterTargets checks that the gate chains, which
// live in mangle, use no target only the filter table has (REJECT) and
// never accept: they return, so the host's own rules still apply.
func TestRulesNeverEndInFilterTargets(t *testing.T) {
	c := designConfig(t)
	c.Protect = specs(t, "tcp/*", "udp/*")
	c.RejectStray = true
	c.RevokeMark = 0x2
	c.KnockRateLimit = "20/second"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ipv6 := range []bool{false, true} {
		for _, r := range joined(slices.Concat(c.Rules(ipv6), c.SynRules(), c.GrantRules(), c.RejectMarkRules())) {
			if strings.Contains(r, "-j REJECT") || strings.Contains(r, "ACCEPT") {
				t.Errorf("Rules(%v) has %q: REJECT and ACCEPT belong in the filter table", ipv6, r)
			}
		}
	}
}

// TestRejectRules checks the filter chain: the reject label answered as
// a closed port, TCP with a reset and UDP with the family's port
// unreachable; with RejectStray, stray TCP segments no label can mark
// refused alike; and the safety net that drops what reaches a protected
// port at an address the gate took for forwarded.
func TestRejectRules(t *testing.T) {
	c := designConfig(t)
	net := func(port string) string {
		return port + " -m addrtype ! --dst-type LOCAL,ANYCAST -m addrtype --dst-type UNICAST -m conntrack ! --ctstate DNAT -j DROP"
	}
	nets := []string{net("-p tcp -m tcp --dport 2000"), net("-p tcp -m tcp --dport 3000"), net("-p udp -m udp --dport 8000")}
	if diff := cmp.Diff(split(lines([]string{rejectTCP, rejectUDP4}, nets)...), c.RejectRules(false)); diff != "" {
		t.Errorf("RejectRules(false) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(split(lines([]string{rejectTCP, rejectUDP6}, nets)...), c.RejectRules(true)); diff != "" {
		t.Errorf("RejectRules(true) (-want +got):\n%s", diff)
	}
	c.RejectLabel = 5
	c.RejectStray = true
	c.Protect = specs(t, "tcp/*")
	want := split(
		"-p tcp -m connlabel --label 5 -j REJECT --reject-with tcp-reset",
		"-p udp -m connlabel --label 5 -j REJECT --reject-with icmp-port-unreachable",
		"-p tcp -m tcp ! --tcp-flags SYN,ACK,FIN,RST SYN -m conntrack --ctstate INVALID,UNTRACKED -j REJECT --reject-with tcp-reset",
		net("-p tcp"))
	if diff := cmp.Diff(want, c.RejectRules(false)); diff != "" {
		t.Errorf("RejectRules(false) with label 5, tcp/* and RejectStray (-want +got):\n%s", diff)
	}
}

// TestHelperChains checks the SYN, grant and reject chains.
func TestHelperChains(t *testing.T) {
	c := designConfig(t)
	c.Protect = specs(t, "tcp/2000", "udp/8000", "tcp/*")
	want := split(loopback, allowSSH,
		"-p tcp -m tcp --dport 2000 -j NFQUEUE --queue-num 101",
		"-p tcp -j NFQUEUE --queue-num 101")
	if diff := cmp.Diff(want, c.SynRules()); diff != "" {
		t.Errorf("SynRules (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(split("-j MARK --set-xmark 0x0/0x20000000"), c.GrantRules()); diff != "" {
		t.Errorf("GrantRules (-want +got):\n%s", diff)
	}
	want = split("-j MARK --set-xmark 0x0/0x40000000",
		"-m conntrack --ctstate NEW -m connlabel --label 127 --set -j RETURN",
		"-p tcp -m tcp ! --tcp-flags SYN,ACK,FIN,RST SYN -m conntrack --ctstate INVALID,UNTRACKED -j RETURN",
		"-j DROP")
	if diff := cmp.Diff(want, c.RejectMarkRules()); diff != "" {
		t.Errorf("RejectMarkRules (-want +got):\n%s", diff)
	}
}

func TestJump(t *testing.T) {
	c := rules.DefaultConfig()
	c.Chain = "GATE"
	if diff := cmp.Diff([]string{"-j", "GATE"}, c.Jump()); diff != "" {
		t.Errorf("Jump (-want +got):\n%s", diff)
	}
	// FORWARD jumps only for DNAT-ed packets: other forwarded traffic
	// never carries the reject mark.
	if diff := cmp.Diff([]string{"-m", "conntrack", "--ctstate", "DNAT", "-j", "GATE"}, c.ForwardJump()); diff != "" {
		t.Errorf("ForwardJump (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name      string
		give      func(*rules.Config)
		wantField string
		wantText  string // must appear in the error
	}{
		{name: "default is valid", give: func(*rules.Config) {}},
		{name: "empty chain", give: func(c *rules.Config) { c.Chain = "" }, wantField: "Chain"},
		{name: "long chain", give: func(c *rules.Config) { c.Chain = strings.Repeat("A", 22) }, wantField: "Chain", wantText: "21"},
		{name: "21 chars ok", give: func(c *rules.Config) { c.Chain = strings.Repeat("A", 21) }},
		{name: "signals share a bit", give: func(c *rules.Config) { c.AcceptMark = 0x40000001 }, wantField: "AcceptMark", wantText: "shares a bit"},
		{name: "no grant signal", give: func(c *rules.Config) { c.AcceptMark = 0 }, wantField: "AcceptMark", wantText: "nonzero"},
		{name: "label too high", give: func(c *rules.Config) { c.RejectLabel = 128 }, wantField: "RejectLabel", wantText: "0-127"},
		{name: "deprecated revoke mark ignored", give: func(c *rules.Config) { c.RevokeMark = 0x40000000 }},
		{name: "chain with space", give: func(c *rules.Config) { c.Chain = "SK NOCK" }, wantField: "Chain", wantText: `"SK NOCK"`},
		{name: "chain leading dash", give: func(c *rules.Config) { c.Chain = "-SK" }, wantField: "Chain"},
		{name: "built-in chain", give: func(c *rules.Config) { c.Chain = "INPUT" }, wantField: "Chain"},
		{name: "target name", give: func(c *rules.Config) { c.Chain = "DROP" }, wantField: "Chain"},
		{name: "zero mark", give: func(c *rules.Config) { c.Mark = 0 }, wantField: "Mark"},
		{name: "same queues", give: func(c *rules.Config) { c.KnockQueue = c.GateQueue }, wantField: "GateQueue"},
		{name: "two gate queues", give: func(c *rules.Config) { c.GateQueues = 2; c.GateQueue = 200 }},
		{name: "sixteen gate queues", give: func(c *rules.Config) { c.GateQueues = 16; c.GateQueue = 200 }},
		{name: "seventeen gate queues", give: func(c *rules.Config) { c.GateQueues = 17 }, wantField: "GateQueues", wantText: "1-16"},
		{name: "negative gate queues", give: func(c *rules.Config) { c.GateQueues = -1 }, wantField: "GateQueues"},
		{name: "gate queues take in the knock queue", give: func(c *rules.Config) { c.GateQueue, c.KnockQueue, c.GateQueues = 99, 101, 3 }, wantField: "GateQueues", wantText: "99-101"},
		{name: "gate queues end below the knock queue", give: func(c *rules.Config) { c.GateQueue, c.KnockQueue, c.GateQueues = 98, 100, 2 }},
		{name: "gate queues past 65535", give: func(c *rules.Config) { c.GateQueue, c.GateQueues = 65534, 3 }, wantField: "GateQueues", wantText: "65535"},
		{name: "knock port zero", give: func(c *rules.Config) { c.KnockFirst = 0 }, wantField: "KnockFirst"},
		{name: "knock range backwards", give: func(c *rules.Config) { c.KnockFirst, c.KnockLast = 9, 8 }, wantField: "KnockFirst", wantText: "9-8"},
		{name: "negative min length", give: func(c *rules.Config) { c.MinLength = -1 }, wantField: "MinLength"},
		{name: "min length too big for IPv6", give: func(c *rules.Config) { c.MinLength = 65488 }, wantField: "MinLength", wantText: "65488"},
		{name: "largest min length", give: func(c *rules.Config) { c.MinLength = 65487 }},
		{name: "bad rate", give: func(c *rules.Config) { c.KnockRateLimit = "fast" }, wantField: "KnockRateLimit", wantText: `"fast"`},
		{name: "good rate", give: func(c *rules.Config) { c.KnockRateLimit = "600/minute" }},
		{
			name:      "protected and always allowed",
			give:      func(c *rules.Config) { c.Protect = specs(t, "tcp/20-25") },
			wantField: "Protect", wantText: "tcp/20-25",
		},
		{name: "tcp all with always allowed ssh", give: func(c *rules.Config) { c.Protect = specs(t, "tcp/*") }},
		{
			name:      "protected udp in knock ports",
			give:      func(c *rules.Config) { c.Protect = specs(t, "udp/9000-10000") },
			wantField: "Protect", wantText: "udp/9000-10000",
		},
		{name: "protected udp all", give: func(c *rules.Config) { c.Protect = specs(t, "udp/*") }},
		{name: "protected tcp in knock range", give: func(c *rules.Config) { c.Protect = specs(t, "tcp/12000") }},
		{
			name:      "always allowed udp in knock ports",
			give:      func(c *rules.Config) { c.AlwaysAllow = specs(t, "udp/51820") },
			wantField: "AlwaysAllow", wantText: "udp/51820",
		},
		{
			name:      "hand-made spec",
			give:      func(c *rules.Config) { c.Protect = []rules.PortSpec{{Proto: 1, First: 1, Last: 1}} },
			wantField: "Protect", wantText: "proto(1) must be tcp or udp",
		},
		{
			name:      "hand-made port zero",
			give:      func(c *rules.Config) { c.Protect = []rules.PortSpec{{Proto: packet.TCP}} },
			wantField: "Protect", wantText: "tcp/0",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.DefaultConfig()
			tt.give(&c)
			err := c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var cerr *rules.ConfigError
			if !errors.As(err, &cerr) {
				t.Fatalf("Validate = %v, want a *ConfigError for %s", err, tt.wantField)
			}
			if cerr.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (error %v)", cerr.Field, tt.wantField, err)
			}
			if !contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

func TestGateQueueNumbers(t *testing.T) {
	for _, tt := range []struct {
		name string
		give int
		want []uint16
	}{
		{"zero is one", 0, []uint16{101}},
		{"one", 1, []uint16{101}},
		{"three", 3, []uint16{101, 102, 103}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rules.DefaultConfig()
			c.GateQueues = tt.give
			if diff := cmp.Diff(tt.want, c.GateQueueNumbers()); diff != "" {
				t.Errorf("GateQueueNumbers (-want +got):\n%s", diff)
			}
		})
	}
}
