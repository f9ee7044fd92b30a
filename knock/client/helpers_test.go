package client_test

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/knock/client"
	"sknock/packet"
	"sknock/pki"
)

const testPassword = "portknocking"

// testPKI is a CA in a temporary directory with a server bundle and a
// client bundle allowing tcp/2000 and udp/8000.
type testPKI struct {
	dir                              string
	clientPFX, serverPFX, serverCert string
	trust                            *gate.Trust
	ca                               *testpki.PKI
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	ca := testpki.New(t, &testpki.Options{
		Server: "gatekeeper", Password: testPassword,
		Clients: map[string]string{"alice": "tcp/2000,udp/8000"},
	})
	p := &testPKI{
		dir:        ca.Dir,
		clientPFX:  ca.Issued(t, "alice").PKCS12,
		serverPFX:  ca.ServerPKCS12,
		serverCert: ca.ServerCert,
		ca:         ca,
	}
	p.trust = loadTrust(t, p.serverPFX)
	return p
}

// loadTrust builds the gatekeeper's trust from its bundle, as sknockd does.
func loadTrust(t testing.TB, serverPFX string) *gate.Trust {
	t.Helper()
	b, err := pki.LoadBundle(serverPFX, testPassword)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := gate.NewTrust(b, b.CAs, nil, 7*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return trust
}

// fakeGate is a gatekeeper on loopback: it receives knocks on a UDP port,
// decides them with gate.Decide, and opens a TCP port, as far as its Dial
// is concerned, from the grant number openAfter on.
type fakeGate struct {
	t         testing.TB
	conn      *net.UDPConn
	trust     *gate.Trust
	now       func() time.Time
	openAfter int

	mu        sync.Mutex
	decisions []gate.Decision
	decided   chan struct{}      // closed and replaced at each decision
	granted   map[gate.Grant]int // grants per port
	dials     int
}

func newFakeGate(t testing.TB, trust *gate.Trust, now func() time.Time, openAfter int) *fakeGate {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGate{t: t, conn: conn, trust: trust, now: now, openAfter: openAfter, decided: make(chan struct{}), granted: map[gate.Grant]int{}}
	done := make(chan struct{})
	go g.serve(done)
	t.Cleanup(func() { conn.Close(); <-done })
	return g
}

func (g *fakeGate) port() uint16 { return uint16(g.conn.LocalAddr().(*net.UDPAddr).Port) }

func (g *fakeGate) serve(done chan<- struct{}) {
	defer close(done)
	buf := make([]byte, 65536)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		d := gate.Decide(gate.Input{Datagram: append([]byte(nil), buf[:n]...), Source: from.Addr(), Now: g.now()}, g.trust, nil)
		g.mu.Lock()
		g.decisions = append(g.decisions, d)
		if d.Granted() && d.Grants == nil {
			g.granted[d.Grant]++
		}
		for _, gr := range d.Grants {
			g.granted[gr]++
		}
		close(g.decided)
		g.decided = make(chan struct{})
		g.mu.Unlock()
	}
}

// Decisions returns the decisions so far.
func (g *fakeGate) Decisions() []gate.Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]gate.Decision(nil), g.decisions...)
}

// Dials returns how many connections the client tried.
func (g *fakeGate) Dials() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dials
}

// Dial is a client.Config.Dial: it connects (to one end of a pipe) when
// the port has at least openAfter grants, and is refused otherwise.
func (g *fakeGate) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.dials++
	open := g.granted[gate.Grant{Source: netip.MustParseAddr("127.0.0.1"), Proto: packet.TCP, Port: ap.Port()}] >= g.openAfter
	g.mu.Unlock()
	if !open {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	local, remote := net.Pipe()
	remote.Close()
	return local, nil
}

// waitDecisions waits until the fake gatekeeper decided n knocks. The
// timeout only ends a test that would otherwise hang.
func (g *fakeGate) waitDecisions(n int) []gate.Decision {
	g.t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		g.mu.Lock()
		d, decided := append([]gate.Decision(nil), g.decisions...), g.decided
		g.mu.Unlock()
		if len(d) >= n {
			return d
		}
		select {
		case <-decided:
		case <-timeout.C:
			g.t.Fatalf("fake gatekeeper decided %d knocks, want %d", len(d), n)
		}
	}
}

func mustRequests(t testing.TB, texts ...string) []client.Request {
	t.Helper()
	var reqs []client.Request
	for _, s := range texts {
		r, err := client.ParseRequest(s)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, r)
	}
	return reqs
}

// claimedIP is the client address a decided knock of either version
// embeds, or the zero address when it did not open.
func claimedIP(d gate.Decision) netip.Addr {
	switch {
	case d.Knock != nil:
		return d.Knock.ClientIP
	case d.KnockV2 != nil:
		return d.KnockV2.ClientIP
	}
	return netip.Addr{}
}
