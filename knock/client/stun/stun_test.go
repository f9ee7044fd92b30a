package stun

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	pion "github.com/pion/stun/v3"
)

// serve runs Serve on a loopback socket until the test ends and returns
// its address.
func serve(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go Serve(conn)
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String()
}

// liar answers every Binding request with addr.
func liar(t *testing.T, addr netip.Addr) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req := &pion.Message{Raw: append([]byte(nil), buf[:n]...)}
			if req.Decode() != nil {
				continue
			}
			resp := pion.MustBuild(pion.NewTransactionIDSetter(req.TransactionID), pion.BindingSuccess,
				&pion.XORMappedAddress{IP: addr.AsSlice(), Port: 4242})
			conn.WriteTo(resp.Raw, from)
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String()
}

// silent is a UDP port that reads and never answers.
func silent(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String()
}

func TestQuerySeesTheSourceAddress(t *testing.T) {
	server := serve(t)
	r, err := Query(context.Background(), "udp4", server)
	if err != nil {
		t.Fatal(err)
	}
	if r.Addr.Addr() != netip.MustParseAddr("127.0.0.1") || r.Addr.Port() == 0 {
		t.Errorf("Query = %v, want 127.0.0.1 and the client's port", r.Addr)
	}
	if r.Software != "sknock" {
		t.Errorf("software %q, want sknock", r.Software)
	}
}

func TestDiscoverTwoServersAgree(t *testing.T) {
	a, b := serve(t), serve(t)
	ans, err := Discover(context.Background(), "udp4", []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Addr != netip.MustParseAddr("127.0.0.1") || len(ans.Servers) != 2 {
		t.Errorf("Discover = %+v, want 127.0.0.1 from both servers", ans)
	}
}

func TestDiscoverTwoServersDisagree(t *testing.T) {
	a, b := liar(t, netip.MustParseAddr("198.18.7.7")), liar(t, netip.MustParseAddr("198.18.8.8"))
	_, err := Discover(context.Background(), "udp4", []string{a, b})
	if !errors.Is(err, ErrDisagree) {
		t.Fatalf("Discover = %v, want ErrDisagree", err)
	}
}

func TestDiscoverOneDeadServerCostsOnlyTheGrace(t *testing.T) {
	good, dead := serve(t), silent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ans, err := Discover(ctx, "udp4", []string{dead, good})
	if err != nil {
		t.Fatal(err)
	}
	if len(ans.Servers) != 1 || ans.Servers[0] != good {
		t.Errorf("answered by %v, want only %s", ans.Servers, good)
	}
	// The context's 10 s were not waited out: Discover returned after the
	// first answer's grace (ctx is still live).
	if ctx.Err() != nil {
		t.Error("Discover waited for the dead server until the deadline")
	}
}

func TestDiscoverNoAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := Discover(ctx, "udp4", []string{silent(t)})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Discover = %v, want ErrNoAnswer", err)
	}
}

func TestServeIgnoresGarbage(t *testing.T) {
	if _, ok := respond([]byte("not stun at all, but long enough to look"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); ok {
		t.Error("respond answered garbage")
	}
	resp := pion.MustBuild(pion.TransactionID, pion.BindingSuccess)
	if _, ok := respond(resp.Raw, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); ok {
		t.Error("respond answered a response")
	}
}

// BenchmarkDiscoverLoopback is the cold cost of --source-ip auto against
// a STUN server one loopback hop away.
func BenchmarkDiscoverLoopback(b *testing.B) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	go Serve(conn)
	servers := []string{conn.LocalAddr().String()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Discover(context.Background(), "udp4", servers); err != nil {
			b.Fatal(err)
		}
	}
}
