package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"sknock/internal/testenv"
)

// TestIntegrationNet checks the harness itself: every namespace reaches
// the server's echo services over both families, and Do leaves the
// calling thread's namespace as it found it.
func TestIntegrationNet(t *testing.T) {
	testenv.RequireRoot(t)
	n := NewNet(t)
	ServeTCPEcho(t, n.Server, ":2000")
	ServeUDPEcho(t, n.Server, ":8000")

	before := mustNetnsID(t)
	if err := n.Client.Do(func() error {
		inside, err := netnsID()
		if err == nil && inside == before {
			err = fmt.Errorf("Do did not switch namespaces")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if after := mustNetnsID(t); after != before {
		t.Fatalf("namespace after Do: %s, want %s", after, before)
	}

	for _, tc := range []struct {
		name string
		from func() error
	}{
		{"client tcp v4", func() error { return TCPEcho(n.Client, AddrPort(ServerV4, 2000), time.Second) }},
		{"client tcp v6", func() error { return TCPEcho(n.Client, AddrPort(ServerV6, 2000), time.Second) }},
		{"client udp v4", func() error { return UDPEcho(n.Client, AddrPort(ServerV4, 8000), time.Second) }},
		{"client udp v6", func() error { return UDPEcho(n.Client, AddrPort(ServerV6, 8000), time.Second) }},
		{"mallory tcp v4", func() error { return TCPEcho(n.Mallory, AddrPort(ServerV4, 2000), time.Second) }},
		{"mallory udp v6", func() error { return UDPEcho(n.Mallory, AddrPort(ServerV6, 8000), time.Second) }},
	} {
		if err := tc.from(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := TCPEcho(n.Client, AddrPort(ServerV4, 2001), time.Second); !IsRefused(err) {
		t.Errorf("tcp to a closed port: %v, want connection refused", err)
	}
}

// netnsID names the network namespace of the calling thread. Outside Do
// every thread is in the same one, so the caller need not lock its thread.
func netnsID() (string, error) {
	return os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
}

func mustNetnsID(t *testing.T) string {
	t.Helper()
	id, err := netnsID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
