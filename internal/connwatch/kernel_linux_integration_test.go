//go:build linux

package connwatch

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/netns"
	"sknock/internal/testenv"
	"sknock/packet"
)

// TestIntegrationKernelDumpAndDestroy: in a namespace of its own, with
// conntrack tracking, a TCP connection on loopback is in Kernel.Dump under
// its exact tuple, and flushing conntrack's table (conntrack -F) reports
// it destroyed through WatchDestroyed.
func TestIntegrationKernelDumpAndDestroy(t *testing.T) {
	testenv.RequireRoot(t)
	ns := netns.New(t, "ctw")
	ns.MustRun("ip", "link", "set", "lo", "up")
	ns.MustRun("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT") // tracks the namespace's traffic
	var l net.Listener
	var conn net.Conn
	if err := ns.Do(func() (err error) {
		if l, err = net.Listen("tcp4", "127.0.0.1:0"); err != nil {
			return err
		}
		conn, err = net.Dial("tcp4", l.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	defer conn.Close()
	want := gate.Conn{Proto: packet.TCP, Src: conn.LocalAddr().(*net.TCPAddr).AddrPort(), Dst: conn.RemoteAddr().(*net.TCPAddr).AddrPort()}
	want.Src = netip.AddrPortFrom(want.Src.Addr().Unmap(), want.Src.Port())
	want.Dst = netip.AddrPortFrom(want.Dst.Addr().Unmap(), want.Dst.Port())

	var conns []gate.Conn
	if err := ns.Do(func() (err error) {
		conns, err = Kernel{}.Dump()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range conns {
		found = found || c == want
	}
	if !found {
		t.Fatalf("Dump = %v, want %v among them", conns, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	destroyed := make(chan gate.Conn, 64)
	watching := make(chan error, 1)
	go func() {
		watching <- ns.Do(func() error { return Kernel{}.WatchDestroyed(ctx, destroyed) })
	}()
	// The listener joins the multicast group asynchronously: flush until
	// the event comes.
	for {
		ns.Run("conntrack", "-F")
		select {
		case c := <-destroyed:
			if c == want {
				cancel()
				if err := <-watching; err != nil {
					t.Errorf("WatchDestroyed: %v", err)
				}
				return
			}
		case <-time.After(200 * time.Millisecond):
			// the connection's next segment re-creates the entry; flush again
			conn.Write([]byte("x"))
		case <-ctx.Done():
			t.Fatal("no destroy event for the connection")
		}
	}
}
