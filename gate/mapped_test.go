package gate

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"sknock/packet"
)

// TestDecideIPv4InIPv6Source: a knock from an IPv6 source that is an IPv4
// address in IPv6 form (v4-mapped ::ffff:0:0/96, v4-compatible ::/96) is
// refused before any work, whatever it embeds; loopback and real
// addresses of either family are decided as usual.
func TestDecideIPv4InIPv6Source(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,udp/8000"})
	trust := p.trust(t)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name  string
		give  string // the datagram's source
		embed string // the client address in the knock
		want  string // the reason's name
	}{
		{name: "v4-mapped source, IPv4 embedded", give: "::ffff:198.18.0.2", embed: "198.18.0.2", want: "mapped_source"},
		{name: "v4-mapped source, itself embedded", give: "::ffff:198.18.0.2", embed: "::ffff:198.18.0.2", want: "mapped_source"},
		{name: "v4-compatible source", give: "::198.18.0.2", embed: "::198.18.0.2", want: "mapped_source"},
		{name: "unspecified source", give: "::", embed: "::", want: "mapped_source"},
		{name: "loopback source", give: "::1", embed: "::1", want: "granted"},
		{name: "IPv4 source", give: "198.18.0.2", embed: "198.18.0.2", want: "granted"},
		{name: "IPv6 source", give: "fd00:5e::2", embed: "fd00:5e::2", want: "granted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := p.seal(t, "alice", packet.UDP, 8000, tt.embed, now)
			d := Decide(Input{Datagram: data, Source: netip.MustParseAddr(tt.give), Now: now}, trust, nil)
			if got := d.Reason.String(); got != tt.want {
				t.Errorf("Decide from %s = %s (%v), want %s", tt.give, got, d.Err, tt.want)
			}
		})
	}
}

// TestDecideCrossFamilyClientAddress: over IPv6 the embedded client
// address is read as 16 bytes, so an IPv4 client's address (4 bytes, 12
// zero bytes) reads as an IPv6 address ending in 96 zero bits. A knock
// written that way is refused, with a detail that names the IPv4 address,
// even when an IPv6 source happens to have those 16 bytes.
func TestDecideCrossFamilyClientAddress(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,udp/8000"})
	trust := p.trust(t)
	now := time.Now().Truncate(time.Second)
	tests := []struct {
		name       string
		give       string // the datagram's source
		embed      string
		want       string
		wantDetail string // in d.Err
	}{
		{name: "IPv4 embedded, same 16 bytes over IPv6", give: "c612:2::", embed: "198.18.0.2", want: "source_mismatch", wantDetail: "IPv4 address 198.18.0.2"},
		{name: "v4-mapped embedded over IPv6", give: "c612:2::", embed: "::ffff:198.18.0.2", want: "source_mismatch", wantDetail: "IPv4 address 198.18.0.2"},
		{name: "IPv4 embedded, other IPv6 source", give: "fd00:5e::2", embed: "198.18.0.2", want: "source_mismatch", wantDetail: "IPv4 address 198.18.0.2"},
		{name: "IPv6 embedded over IPv4", give: "198.18.0.2", embed: "fd00:5e::2", want: "malformed"},
		{name: "IPv6 embedded over IPv6", give: "fd00:5e::2", embed: "fd00:5e::2", want: "granted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := p.seal(t, "alice", packet.UDP, 8000, tt.embed, now)
			d := Decide(Input{Datagram: data, Source: netip.MustParseAddr(tt.give), Now: now}, trust, nil)
			if got := d.Reason.String(); got != tt.want {
				t.Fatalf("Decide from %s = %s (%v), want %s", tt.give, got, d.Err, tt.want)
			}
			if tt.wantDetail != "" && (d.Err == nil || !strings.Contains(d.Err.Error(), tt.wantDetail)) {
				t.Errorf("detail %v does not name %q", d.Err, tt.wantDetail)
			}
		})
	}
}

// TestDecideVectorIPv4KnockOverIPv6: the independent implementation's
// IPv4 knock, carried over IPv6 from the source whose 16 bytes equal its
// embedded address, is refused.
func TestDecideVectorIPv4KnockOverIPv6(t *testing.T) {
	d := Decide(vectorInput(readVector(t, "knock-a-tcp2000-v4.bin"), "c612:2::"), vectorTrust(t), nil)
	if d.Granted() || d.Reason.String() != "source_mismatch" {
		t.Errorf("Decide = %s (%v), want source_mismatch", d.Reason, d.Err)
	}
}

// TestVerdictIPv4InIPv6Source: a packet from a v4-mapped or v4-compatible
// IPv6 source is dropped under every policy, never accepted on the grant
// of the IPv4 address it spells and never deferred for a pending knock.
func TestVerdictIPv4InIPv6Source(t *testing.T) {
	p := newTestPKI(t, map[string]string{"alice": "tcp/2000,udp/8000"})
	mapped := netip.MustParseAddr("::ffff:198.18.0.2")
	tests := []struct {
		name   string
		policy Policy
		give   netip.Addr
		want   packet.Verdict
	}{
		{name: "v4-mapped, drop", policy: PolicyDrop, give: mapped, want: packet.Drop},
		{name: "v4-mapped, reject", policy: PolicyReject, give: mapped, want: packet.Drop},
		{name: "v4-mapped, none", policy: PolicyNone, give: mapped, want: packet.Drop},
		{name: "v4-compatible, reject", policy: PolicyReject, give: netip.MustParseAddr("::198.18.0.2"), want: packet.Drop},
		{name: "unspecified, none", policy: PolicyNone, give: netip.IPv6Unspecified(), want: packet.Drop},
		{name: "the IPv4 source itself", policy: PolicyReject, give: netip.MustParseAddr("198.18.0.2"), want: packet.Accept},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: time.Now().Truncate(time.Second)}
			e := NewEngine(Config{Clock: clock.Now, Policy: tt.policy}, p.trust(t))
			if d := e.Knock(netip.MustParseAddr("198.18.0.2"), p.seal(t, "alice", packet.UDP, 8000, "198.18.0.2", clock.Now())); !d.Granted() {
				t.Fatalf("knock denied: %v %v", d.Reason, d.Err)
			}
			h := header(tt.give, packet.UDP, 8000)
			if v, granted := e.Verdict(&h, clock.Now()); v != tt.want || granted != (tt.want == packet.Accept) {
				t.Errorf("Verdict from %s = %v (granted %v), want %v", tt.give, v, granted, tt.want)
			}
		})
	}
}

// TestVerdictDoesNotDeferIPv4InIPv6Source: a knock pending from a
// v4-mapped source does not earn its packets a place in the Holder.
func TestVerdictDoesNotDeferIPv4InIPv6Source(t *testing.T) {
	env := newHolderEnv(t, HolderConfig{})
	mapped := netip.MustParseAddr("::ffff:198.18.0.7")
	env.e.KnockQueued(mapped)
	defer env.e.KnockUnhandled(mapped)
	if v := env.send(t, mapped, 2000, 1); v != packet.Drop {
		t.Errorf("Verdict with a knock pending = %v, want drop", v)
	}
}
