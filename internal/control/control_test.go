package control

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// serveOnce answers one request on a unix socket in a test directory
// with answer, and returns the socket's path and what was asked.
func serveOnce(t *testing.T, answer func(Request) Response) (string, <-chan Request) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	asked := make(chan Request, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		req, err := ReadRequest(conn)
		if err != nil {
			WriteResponse(conn, Response{Error: err.Error()})
			return
		}
		asked <- req
		WriteResponse(conn, answer(req))
	}()
	return path, asked
}

func TestCallRoundTrip(t *testing.T) {
	want := Response{Grants: []Grant{{Source: "198.18.0.2", Proto: "tcp", Port: 2000, Serial: "12", Expires: time.Unix(1_000_000, 0).UTC(), SecondsLeft: 14}}, Live: 1}
	path, asked := serveOnce(t, func(Request) Response { return want })
	req := Request{Command: CommandRevoke, Source: "198.18.0.2"}
	got, err := Call(path, req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(req, <-asked); diff != "" {
		t.Errorf("request as read (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

func TestCallRefused(t *testing.T) {
	path, _ := serveOnce(t, func(Request) Response { return Response{Error: "only root may use the control socket"} })
	_, err := Call(path, Request{Command: CommandStatus}, 5*time.Second)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "only root") {
		t.Fatalf("Call = %v, want ErrRefused saying only root", err)
	}
}

func TestCallNoDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := Call(path, Request{Command: CommandStatus}, time.Second)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Call to no socket = %v, want an error naming %s", err, path)
	}
}

func TestReadRequestRefusesUnknownFields(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go a.Write([]byte(`{"command":"revoke","everything":true}` + "\n"))
	if _, err := ReadRequest(b); err == nil || !strings.Contains(err.Error(), "everything") {
		t.Fatalf("ReadRequest = %v, want an error naming the unknown field", err)
	}
}
