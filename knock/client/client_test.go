package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/gate"
	"sknock/knock/client"
	"sknock/packet"
	"sknock/pki"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    client.Request
		wantErr bool
	}{
		{name: "tcp", give: "tcp/22", want: client.Request{Proto: packet.TCP, Port: 22}},
		{name: "udp", give: "udp/8000", want: client.Request{Proto: packet.UDP, Port: 8000}},
		{name: "upper case", give: "TCP/2000", want: client.Request{Proto: packet.TCP, Port: 2000}},
		{name: "highest port", give: "udp/65535", want: client.Request{Proto: packet.UDP, Port: 65535}},
		{name: "no slash", give: "tcp22", wantErr: true},
		{name: "no port", give: "tcp/", wantErr: true},
		{name: "port zero", give: "tcp/0", wantErr: true},
		{name: "port too big", give: "tcp/65536", wantErr: true},
		{name: "sign", give: "tcp/+22", wantErr: true},
		{name: "range", give: "tcp/22-23", wantErr: true},
		{name: "unknown protocol", give: "sctp/22", wantErr: true},
		{name: "empty", give: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.ParseRequest(tt.give)
			if tt.wantErr {
				if !errors.Is(err, client.ErrRequest) {
					t.Fatalf("ParseRequest(%q) = %v, %v; want ErrRequest", tt.give, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRequest(%q) (-want +got):\n%s", tt.give, diff)
			}
			if got.String() != strings.ToLower(tt.give) {
				t.Errorf("String() = %q, want %q", got.String(), tt.give)
			}
		})
	}
}

func fixedClock() func() time.Time {
	now := time.Unix(time.Now().Unix(), 0)
	return func() time.Time { return now }
}

// TestKnockV2OneKnockForEveryPort: by default the client seals every
// port in one v2 knock, which the gatekeeper grants whole.
func TestKnockV2OneKnockForEveryPort(t *testing.T) {
	p := newTestPKI(t)
	now := fixedClock()
	g := newFakeGate(t, p.trust, now, 1)
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{KnockPort: g.port(), Now: now, Dial: g.Dial})
	if err != nil {
		t.Fatal(err)
	}
	if c.Protocol() != 2 {
		t.Errorf("default protocol %d, want 2", c.Protocol())
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000", "udp/8000")...)
	if err != nil {
		t.Fatalf("Knock: %v", err)
	}
	if got := []client.Status{results[0].Status, results[1].Status}; !cmp.Equal(got, []client.Status{client.StatusOpen, client.StatusSent}) {
		t.Errorf("statuses = %v, want [open knocked]", got)
	}
	d := g.waitDecisions(1)
	lo := netip.MustParseAddr("127.0.0.1")
	want := []gate.Grant{{Source: lo, Proto: packet.TCP, Port: 2000}, {Source: lo, Proto: packet.UDP, Port: 8000}}
	if len(d) != 1 || d[0].Version != 2 || !d[0].Granted() || !slices.Equal(d[0].Grants, want) {
		t.Fatalf("decisions %+v; want one v2 grant of %v", d, want)
	}
	if ms := d[0].KnockV2.TimestampMillis; ms != uint64(now().UnixMilli()) {
		t.Errorf("timestamp %d ms, want %d", ms, now().UnixMilli())
	}
}

// TestKnockGrantedByGatekeeper sends two v1 knocks to a fake gatekeeper
// on loopback and checks what it decodes and decides.
func TestKnockGrantedByGatekeeper(t *testing.T) {
	p := newTestPKI(t)
	now := fixedClock()
	g := newFakeGate(t, p.trust, now, 1)
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{KnockPort: g.port(), Now: now, Dial: g.Dial, Protocol: 1})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000", "udp/8000")...)
	if err != nil {
		t.Fatalf("Knock: %v", err)
	}
	if got := []client.Status{results[0].Status, results[1].Status}; !cmp.Equal(got, []client.Status{client.StatusOpen, client.StatusSent}) {
		t.Errorf("statuses = %v, want [open knocked]", got)
	}
	type fields struct {
		Verdict  string
		Proto    packet.Proto
		Port     uint16
		ClientIP netip.Addr
		Time     int64
		Subject  string
	}
	var got []fields
	for _, d := range g.waitDecisions(2) {
		f := fields{Verdict: d.Verdict(), Proto: d.Knock.Proto, Port: d.Knock.Port, ClientIP: d.Knock.ClientIP, Time: d.Knock.Time().Unix()}
		if d.Client != nil {
			f.Subject = d.Client.Subject
		}
		got = append(got, f)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	want := []fields{
		{"grant", packet.TCP, 2000, lo, now().Unix(), "CN=alice"},
		{"grant", packet.UDP, 8000, lo, now().Unix(), "CN=alice"},
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("decisions (-want +got):\n%s", diff)
	}
}

func TestKnockRetriesUntilOpen(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 3) // the port opens on the third grant
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: 50 * time.Millisecond, Retries: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if err != nil {
		t.Fatalf("Knock: %v", err)
	}
	r := results[0]
	if r.Status != client.StatusOpen || r.Knocks != 3 {
		t.Errorf("status %v after %d knocks, want open after 3", r.Status, r.Knocks)
	}
	if r.Probes < 3 || r.Probes != g.Dials() {
		t.Errorf("Probes = %d, fake saw %d dials; want the same, at least 3", r.Probes, g.Dials())
	}
	// Every re-knock is a fresh datagram: all three were granted, none
	// refused as a replay.
	for i, d := range g.waitDecisions(3) {
		if !d.Granted() {
			t.Errorf("knock %d: %v: %v", i+1, d.Reason, d.Err)
		}
	}
}

func TestKnockFirstProbeImmediate(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 0) // open before any knock
	const timeout = time.Minute
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{KnockPort: g.port(), Dial: g.Dial, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if err != nil {
		t.Fatal(err)
	}
	if r := results[0]; r.Status != client.StatusAlreadyOpen || r.Probes > 2 || r.Elapsed > timeout/2 {
		t.Errorf("%v after %d probes in %s; want already open at once (the connection started before the knock)", r.Status, r.Probes, r.Elapsed)
	}
}

// TestKnockUnauthorisedSendsNothing: a port the certificate does not
// authorise is refused by the client itself, with words that say what the
// certificate allows, and no datagram leaves for it.
func TestKnockUnauthorisedSendsNothing(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1)
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: 100 * time.Millisecond, Retries: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/3000", "tcp/2000")...)
	if !errors.Is(err, client.ErrNotAuthorised) {
		t.Fatalf("Knock error = %v, want ErrNotAuthorised", err)
	}
	const want = "port not authorised by your certificate: your certificate allows tcp/2000, udp/8000, not tcp/3000 (nothing sent)"
	if r := results[0]; r.Status != client.StatusFailed || r.Knocks != 0 || r.Err == nil || r.Err.Error() != want {
		t.Errorf("tcp/3000: %v after %d knocks (%v), want failed after none with %q", r.Status, r.Knocks, r.Err, want)
	}
	if r := results[1]; r.Status != client.StatusOpen {
		t.Errorf("tcp/2000: %v (%v), want open", r.Status, r.Err)
	}
	// The knocks were sent in request order: had tcp/3000's left, it
	// would be the first decision.
	if d := g.waitDecisions(1); d[0].Grant.Port != 2000 || len(d) != 1 {
		t.Errorf("the gatekeeper decided %d knocks, the first for port %d; want only tcp/2000's", len(d), d[0].Grant.Port)
	}
}

// TestKnockGivesUpAfterRetries: a port that never opens fails after
// Retries+1 knocks of Timeout each, says where to look, and leaves no
// goroutine of the client behind.
func TestKnockGivesUpAfterRetries(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1000) // grants, but never opens
	const retries, timeout = 2, 100 * time.Millisecond
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: timeout, Retries: retries,
	})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if stacks := clientGoroutines(); len(stacks) > 0 {
		t.Errorf("%d of the client's goroutines outlived Knock:\n%s", len(stacks), strings.Join(stacks, "\n\n"))
	}
	if !errors.Is(err, client.ErrNotOpen) {
		t.Fatalf("Knock error = %v, want ErrNotOpen", err)
	}
	r := results[0]
	if r.Status != client.StatusFailed || r.Knocks != retries+1 {
		t.Errorf("%v after %d knocks, want failed after %d", r.Status, r.Knocks, retries+1)
	}
	if !strings.Contains(r.Err.Error(), "knock log line") {
		t.Errorf("error %q does not say where the reason is logged", r.Err)
	}
}

// TestVerifyDelayedListener checks verification against a real loopback
// port that only starts listening after the knock: the first probes are
// refused and a later one connects, without another knock.
func TestVerifyDelayedListener(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()

	var refused atomic.Int32
	twoRefused := make(chan struct{})
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, address)
		if err != nil && refused.Add(1) == 2 {
			close(twoRefused)
		}
		return conn, err
	}
	bundle := p.ca.Client(t, "delayed", fmt.Sprintf("tcp/%d", port)).PKCS12
	c, err := client.Load(bundle, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: dial, Timeout: 10 * time.Second, Retries: -1, SourceIP: netip.MustParseAddr("127.0.0.1"),
	})
	if err != nil {
		t.Fatal(err)
	}
	listening := make(chan net.Listener, 1)
	knocked := make(chan struct{})
	go func() {
		select {
		case <-twoRefused: // open only after two refused probes
		case <-knocked: // Knock gave up before: nothing to open
			listening <- nil
			return
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
		}
		listening <- l
	}()
	results, err := c.Knock(context.Background(), "127.0.0.1", client.Request{Proto: packet.TCP, Port: port})
	close(knocked)
	if l := <-listening; l != nil {
		defer l.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	if r := results[0]; r.Status != client.StatusOpen || r.Knocks != 1 || r.Probes < 3 {
		t.Errorf("%v after %d knocks and %d probes, want open after 1 knock and at least 3 probes", r.Status, r.Knocks, r.Probes)
	}
}

func TestConnectReturnsTheProbe(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1)
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{KnockPort: g.port(), Dial: g.Dial})
	if err != nil {
		t.Fatal(err)
	}
	conn, res, err := c.Connect(context.Background(), "127.0.0.1", 2000)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	if res.Status != client.StatusOpen || g.Dials() != res.Probes {
		t.Errorf("%v with %d probes, fake saw %d dials", res.Status, res.Probes, g.Dials())
	}
}

func TestKnockContextCancelled(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 100)
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{KnockPort: g.port(), Dial: g.Dial, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = c.Knock(ctx, "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Knock error = %v, want DeadlineExceeded", err)
	}
}

func TestLoadErrors(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name      string
		give      [3]string // bundle, password, server certificate
		wantIs    error
		wantInMsg string
	}{
		{name: "wrong password", give: [3]string{p.clientPFX, "nope", p.serverCert}, wantIs: pki.ErrPassword, wantInMsg: p.clientPFX},
		{name: "missing bundle", give: [3]string{p.dir + "/missing.pfx", testPassword, p.serverCert}, wantInMsg: "missing.pfx"},
		{name: "missing server certificate", give: [3]string{p.clientPFX, testPassword, p.dir + "/missing.pem"}, wantInMsg: "missing.pem"},
		{name: "server certificate not a certificate", give: [3]string{p.clientPFX, testPassword, p.clientPFX}, wantInMsg: p.clientPFX},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Load(tt.give[0], tt.give[1], tt.give[2], nil)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v, want %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantInMsg) {
				t.Errorf("error %q does not name %q", err, tt.wantInMsg)
			}
		})
	}
}

func TestKnockFamilyMismatch(t *testing.T) {
	p := newTestPKI(t)
	tests := []struct {
		name string
		give client.Config
		host string
	}{
		{name: "-6 with an IPv4 host", give: client.Config{Network: "ip6"}, host: "127.0.0.1"},
		{name: "-4 with an IPv6 host", give: client.Config{Network: "ip4"}, host: "::1"},
		{name: "IPv6 source for an IPv4 host", give: client.Config{SourceIP: netip.MustParseAddr("::1")}, host: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if results, err := c.Knock(context.Background(), tt.host, mustRequests(t, "udp/8000")...); err == nil || results != nil {
				t.Errorf("Knock = %v, %v; want an error and no results", results, err)
			}
		})
	}
}

// clientGoroutines returns the stacks of running goroutines that are in a
// method of client.Client: probes or senders of a call that returned.
func clientGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "sknock/knock/client.(*Client)") {
			found = append(found, g)
		}
	}
	return found
}

// TestKnockRediscoversAfterAStaleAddress: a knock that embedded a
// STUN-learnt address (say, a cached answer from another network) and did
// not open asks STUN again, past the cache, and the next knock embeds the
// new answer.
func TestKnockRediscoversAfterAStaleAddress(t *testing.T) {
	p := newTestPKI(t)
	g := newFakeGate(t, p.trust, time.Now, 1)
	answers := []netip.Addr{netip.MustParseAddr("198.18.9.9"), netip.MustParseAddr("127.0.0.1")}
	var asked int
	c, err := client.Load(p.clientPFX, testPassword, p.serverCert, &client.Config{
		KnockPort: g.port(), Dial: g.Dial, Timeout: 100 * time.Millisecond, Retries: 2, Source: client.SourceAuto,
		Discover: func(context.Context, string, netip.Addr) (netip.Addr, error) {
			a := answers[min(asked, len(answers)-1)]
			asked++
			return a, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	results, err := c.Knock(context.Background(), "127.0.0.1", mustRequests(t, "tcp/2000")...)
	if err != nil {
		t.Fatal(err)
	}
	if r := results[0]; r.Status != client.StatusOpen || r.Knocks != 2 || asked != 2 {
		t.Errorf("%v after %d knocks, STUN asked %d times; want open after 2 knocks and 2 questions", r.Status, r.Knocks, asked)
	}
	d := g.waitDecisions(2)
	if d[0].Granted() || claimedIP(d[0]) != answers[0] || !d[1].Granted() {
		t.Errorf("decisions %v, %v; want the stale address refused, then a grant", d[0].Verdict(), d[1].Verdict())
	}
}
