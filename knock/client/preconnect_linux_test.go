package client

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
)

// TestStartConnect: the non-blocking connect reports a listening port as
// connected and a closed one as refused.
func TestStartConnect(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := l.Addr().(*net.TCPAddr).AddrPort()
	r := <-startConnect(context.Background(), open)
	if r.err != nil || r.conn == nil {
		t.Fatalf("to a listener: %v", r.err)
	}
	r.conn.Close()
	l.Close()
	if r := <-startConnect(context.Background(), open); !errors.Is(r.err, syscall.ECONNREFUSED) {
		t.Error("to a closed port: not ECONNREFUSED")
	}
}
