package client

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Private ranges appear here only as values to classify: nothing is sent
// to them.
func TestNeedsPublicAddress(t *testing.T) {
	tests := []struct {
		local, host string
		internal    bool // Internal(local)
		want        bool
	}{
		{"192.168.1.10", "198.18.0.1", true, true},
		{"10.1.2.3", "198.18.0.1", true, true},
		{"172.16.0.5", "198.18.0.1", true, true},
		{"172.31.255.254", "198.18.0.1", true, true},
		{"172.32.0.1", "198.18.0.1", false, false},
		{"100.64.0.1", "198.18.0.1", true, true},      // shared (CGNAT)
		{"100.127.255.254", "198.18.0.1", true, true}, // shared, last
		{"100.128.0.1", "198.18.0.1", false, false},
		{"169.254.3.4", "198.18.0.1", true, true}, // link-local
		{"fd12::5", "2001:db8::1", true, true},    // ULA
		{"fe80::1", "2001:db8::1", true, true},    // link-local
		{"2001:db8::5", "2001:db8::1", false, false},
		{"198.19.0.2", "198.18.0.1", false, false},   // test range: not private
		{"192.168.1.10", "192.168.1.1", true, false}, // host on the same LAN
		{"10.0.0.2", "100.64.0.1", true, false},      // host behind CGNAT too
		{"192.168.1.10", "127.0.0.1", true, false},   // loopback host
		{"::ffff:192.168.1.10", "198.18.0.1", true, true},
	}
	for _, tt := range tests {
		local, host := netip.MustParseAddr(tt.local), netip.MustParseAddr(tt.host)
		if got := Internal(local); got != tt.internal {
			t.Errorf("Internal(%s) = %v, want %v", local, got, tt.internal)
		}
		if got := NeedsPublicAddress(local, host); got != tt.want {
			t.Errorf("NeedsPublicAddress(%s, %s) = %v, want %v", local, host, got, tt.want)
		}
	}
}

// fakeSource is a client whose local address toward any host is local and
// whose STUN discovery returns public or err, counting calls.
func fakeSource(t *testing.T, mode SourceMode, local, public string, err error) (*Client, *int) {
	t.Helper()
	calls := new(int)
	c, cerr := newClient(nil, nil, nil, &Config{
		Source:    mode,
		LocalAddr: func(netip.Addr) (netip.Addr, error) { return netip.MustParseAddr(local), nil },
		Discover: func(context.Context, string, netip.Addr) (netip.Addr, error) {
			*calls++
			if err != nil {
				return netip.Addr{}, err
			}
			return netip.MustParseAddr(public), nil
		},
	})
	if cerr != nil {
		t.Fatal(cerr)
	}
	return c, calls
}

func TestChooseSourceDefaultIsAutoBehindPrivateAddress(t *testing.T) {
	c, calls := fakeSource(t, SourceDefault, "192.168.1.10", "198.18.5.5", nil)
	tg := target{host: netip.MustParseAddr("198.18.0.1")}
	if err := c.chooseSource(context.Background(), &tg); err != nil {
		t.Fatal(err)
	}
	if *calls != 1 || tg.source != netip.MustParseAddr("198.18.5.5") || tg.how != "the address echo" {
		t.Errorf("discovery asked %d times, source %s via %s; want once, 198.18.5.5 via the address echo", *calls, tg.source, tg.how)
	}
}

func TestChooseSourceDefaultIsLocalOnPublicAddress(t *testing.T) {
	c, calls := fakeSource(t, SourceDefault, "198.18.0.2", "198.18.5.5", nil)
	tg := target{host: netip.MustParseAddr("198.18.0.1")}
	if err := c.chooseSource(context.Background(), &tg); err != nil {
		t.Fatal(err)
	}
	if *calls != 0 || tg.source.IsValid() || tg.local != netip.MustParseAddr("198.18.0.2") {
		t.Errorf("STUN asked %d times, source %s; want never, the socket's address", *calls, tg.source)
	}
}

func TestChooseSourceExplicitAutoWithoutSTUNFails(t *testing.T) {
	c, _ := fakeSource(t, SourceAuto, "198.19.0.2", "", errors.New("no STUN server answered (asked 198.18.0.1:3478)"))
	tg := target{host: netip.MustParseAddr("198.18.0.1")}
	err := c.chooseSource(context.Background(), &tg)
	const want = "cannot learn the public address: --source-ip auto: no STUN server answered (asked 198.18.0.1:3478); if this host is behind NAT, set --source-ip to its public address (the router's)"
	if !errors.Is(err, ErrNoPublicAddress) || err.Error() != want {
		t.Errorf("chooseSource error\n got  %v\n want %s", err, want)
	}
}

func TestChooseSourceDefaultWithoutSTUNKnocksAndExplains(t *testing.T) {
	c, _ := fakeSource(t, SourceDefault, "192.168.1.10", "", errors.New("no STUN server answered"))
	tg := target{host: netip.MustParseAddr("198.18.0.1")}
	if err := c.chooseSource(context.Background(), &tg); err != nil {
		t.Fatalf("default mode without STUN: %v, want the local address", err)
	}
	const want = "the knock embedded the private address 192.168.1.10; behind NAT the gatekeeper sees another and refuses it as source_mismatch: use --source-ip auto or --source-ip PUBLIC-ADDRESS (address discovery: no STUN server answered)"
	if got := tg.hint(errors.New("connect: no answer within 1s")); got != want {
		t.Errorf("hint\n got  %s\n want %s", got, want)
	}
}

func TestHints(t *testing.T) {
	host := netip.MustParseAddr("198.18.0.1")
	tests := []struct {
		name    string
		tg      target
		lastErr error
		want    string
	}{
		{
			name: "discovery disagrees with the embedded address",
			tg:   target{host: host, local: netip.MustParseAddr("198.19.0.2"), source: netip.MustParseAddr("198.19.0.2"), stunAddr: netip.MustParseAddr("198.18.0.254"), how: "--source-ip"},
			want: "the knock embedded 198.19.0.2 but address discovery sees this host as 198.18.0.254: behind NAT, use --source-ip auto or --source-ip 198.18.0.254",
		},
		{
			name:    "reset",
			tg:      target{host: host, local: netip.MustParseAddr("198.18.0.2"), how: "local"},
			lastErr: syscall.ECONNREFUSED,
			want:    "198.18.0.1 answered with a reset: under policy reject the knock was refused (the gatekeeper's knock log line says why); under policy drop the port is open and nothing listens on it",
		},
		{
			name: "silence",
			tg:   target{host: host, local: netip.MustParseAddr("198.18.0.2"), how: "local"},
			want: "the gatekeeper answers no knock, granted or refused: its knock log line for client 198.18.0.2 (the embedded address, local) holds the reason",
		},
	}
	for _, tt := range tests {
		if got := tt.tg.hint(tt.lastErr); got != tt.want {
			t.Errorf("%s:\n got  %s\n want %s", tt.name, got, tt.want)
		}
	}
}

func TestSourceModeString(t *testing.T) {
	for m, want := range map[SourceMode]string{SourceDefault: "default", SourceLocal: "local", SourceAuto: "auto"} {
		if !strings.EqualFold(m.String(), want) {
			t.Errorf("%d: %q, want %q", m, m.String(), want)
		}
	}
}

func TestForeignServerCert(t *testing.T) {
	c := &Client{serverNames: []string{"gate1.example.net", "*.gates.example.org", "198.18.0.1"}}
	for host, foreign := range map[string]bool{
		"gate1.example.net": false, "GATE1.example.net": false, "b.gates.example.org": false,
		"198.18.0.1": false, "gate2.example.net": true,
	} {
		got := c.foreignServerCert(host, "198.18.0.9")
		if (got != "") != foreign {
			t.Errorf("%s: %q, want foreign=%v", host, got, foreign)
		}
	}
	const want = "the server certificate is for gate1.example.net, *.gates.example.org, 198.18.0.1, not gate2.example.net: if it is another gatekeeper's, this one cannot read the knock; "
	if got := c.foreignServerCert("gate2.example.net", "198.18.0.9"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (&Client{}).foreignServerCert("anything", "198.18.0.9"); got != "" {
		t.Errorf("a certificate naming no host: %q, want no hint", got)
	}
}

func TestHappyOrder(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.0.2")
	v6a, v6b := netip.MustParseAddr("fd00:5e::1"), netip.MustParseAddr("fd00:5e::2")
	mapped := netip.MustParseAddr("::ffff:198.18.0.3")
	tests := []struct{ give, want []netip.Addr }{
		{nil, nil},
		{[]netip.Addr{v4a}, []netip.Addr{v4a}},
		{[]netip.Addr{v4a, v4b}, []netip.Addr{v4a}},
		{[]netip.Addr{v6a, v6b, v4a, v4b}, []netip.Addr{v6a, v4a}},
		{[]netip.Addr{v4a, v4b, v6b}, []netip.Addr{v4a, v6b}},
		{[]netip.Addr{mapped, v6a}, []netip.Addr{mapped.Unmap(), v6a}},
	}
	for _, tt := range tests {
		if got := happyOrder(tt.give); !slices.Equal(got, tt.want) {
			t.Errorf("happyOrder(%v) = %v, want %v", tt.give, got, tt.want)
		}
	}
}

func TestInternalPrefixesCountAsPrivate(t *testing.T) {
	c, err := newClient(nil, nil, nil, &Config{InternalPrefixes: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}})
	if err != nil {
		t.Fatal(err)
	}
	lan, gate := netip.MustParseAddr("198.19.0.2"), netip.MustParseAddr("198.18.0.1")
	if !c.needsPublicAddress(lan, gate) {
		t.Error("a LAN address in InternalPrefixes toward a public host: want STUN")
	}
	if c.needsPublicAddress(lan, netip.MustParseAddr("198.19.0.1")) {
		t.Error("a host in InternalPrefixes too: want the local address")
	}
	if NeedsPublicAddress(lan, gate) {
		t.Error("without the prefix 198.19.0.2 is not private")
	}
}
