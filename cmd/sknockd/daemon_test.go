package main

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sknock/knock"
	"sknock/pki"
	"sknock/queue"
	"sknock/queue/queuetest"
	"sknock/rules"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeOS is every OS boundary of the daemon, faked.
type fakeOS struct {
	gateSock, knockSock *queuetest.Socket
	mu                  sync.Mutex
	applied, removed    int
	applyErr, openErr   error
}

func newFakeOS() *fakeOS {
	return &fakeOS{gateSock: queuetest.New(), knockSock: queuetest.New()}
}

func (f *fakeOS) deps() osDeps {
	return osDeps{
		open: func(sc queue.SocketConfig) (queue.Socket, error) {
			if f.openErr != nil {
				return nil, f.openErr
			}
			if sc.Queue == 101 {
				return f.gateSock.Open(sc)
			}
			return f.knockSock.Open(sc)
		},
		applyRules: func(rules.Config) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.applied++
			return f.applyErr
		},
		removeRules: func(rules.Config) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.removed++
			return nil
		},
		fetch: func(context.Context, string) ([]byte, error) { return nil, errors.New("no network in tests") },
		lock:  func(uint16, uint16) (io.Closer, error) { return io.NopCloser(nil), nil },
	}
}

// daemonPKI makes a CA, the server bundle and client alice (tcp/2000), and
// a config for them.
func daemonPKI(t *testing.T) (dir string, cfg Config) {
	t.Helper()
	dir = t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pki.InitCA(dir, 0))
	must(pki.IssueServer(dir, "server", "pw", pki.IssueOptions{}))
	allow, err := pki.ParseAllow("tcp/2000")
	must(err)
	must(pki.IssueClient(dir, "alice", allow, "pw", pki.IssueOptions{}))
	must(pki.WriteCRL(dir, 0))
	must(os.WriteFile(filepath.Join(dir, "pass"), []byte("pw\n"), 0o600))
	yaml := fmt.Sprintf("server:\n  pkcs12: %[1]s/server.pfx\n  password_file: %[1]s/pass\ncrl:\n  file: %[1]s/ca.crl\ngate:\n  protect: [tcp/2000]\n  policy: reject\n", dir)
	must(os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(yaml), 0o600))
	cfg, err = LoadConfig(filepath.Join(dir, "config.yaml"))
	must(err)
	return dir, cfg
}

func sealFor(t *testing.T, dir, client string, port uint16, ip string) []byte {
	t.Helper()
	server, err := pki.LoadBundle(filepath.Join(dir, "server.pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.LoadBundle(filepath.Join(dir, client+".pfx"), "pw")
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := server.Cert.PublicKey.(*ecdsa.PublicKey).ECDH()
	k := knock.Knock{Proto: knock.TCP, Port: port, ClientIP: netip.MustParseAddr(ip), Timestamp: uint32(time.Now().Unix()), Certificate: b.Cert.Raw}
	data, err := knock.Seal(&k, b.Key, pub, nil)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func waitFor(t *testing.T, logs *syncBuffer, substr string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(logs.String(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("no %q (×%d) in the log:\n%s", substr, n, logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lastVerdict injects a SYN from src to port 2000 and returns the verdict.
func synVerdict(t *testing.T, f *fakeOS, src string) queuetest.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := queuetest.TCPPacket(netip.MustParseAddr(src), 40000, netip.MustParseAddr("198.18.0.1"), 2000, queue.TCPSyn)
	id, err := f.gateSock.Inject(ctx, pkt)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range f.gateSock.Verdicts() {
		if v.ID == id {
			return v
		}
	}
	t.Fatalf("no verdict for packet %d", id)
	return queuetest.Verdict{}
}

func injectKnock(t *testing.T, f *fakeOS, src string, datagram []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := queuetest.UDPPacket(netip.MustParseAddr(src), 40001, netip.MustParseAddr("198.18.0.1"), 23456, datagram)
	if _, err := f.knockSock.Inject(ctx, pkt); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonWiring drives the whole daemon through its fake OS
// boundaries: rules applied once, a SYN rejected, a knock granted, the
// SYN accepted, a revocation picked up by SIGHUP without losing the grant,
// and the rules removed on stop.
func TestDaemonWiring(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	logs := &syncBuffer{}
	ctx, stop := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	done := make(chan int, 1)
	go func() { done <- serveWith(ctx, &cfg, hup, logs, f.deps()) }()
	waitFor(t, logs, `"msg":"sknockd started"`, 1)

	if v := synVerdict(t, f, "198.18.0.2"); v.Verdict != queue.NFRepeat || v.Mark&cfg.Rules.Mark == 0 {
		t.Fatalf("SYN before the knock: %+v, want a repeat with the reject mark", v)
	}
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	waitFor(t, logs, `"verdict":"grant"`, 1)
	if v := synVerdict(t, f, "198.18.0.2"); v.Verdict != queue.NFAccept {
		t.Fatalf("SYN after the knock: %+v, want accept", v)
	}
	if v := synVerdict(t, f, "198.18.0.3"); v.Verdict != queue.NFRepeat {
		t.Fatalf("SYN from another source: %+v, want reject", v)
	}

	if err := pki.Revoke(dir, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteCRL(dir, 0); err != nil {
		t.Fatal(err)
	}
	hup <- os.Interrupt // any value: the channel stands for SIGHUP
	waitFor(t, logs, "trust reloaded (SIGHUP)", 1)
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	waitFor(t, logs, `"reason":"revoked"`, 1)
	if v := synVerdict(t, f, "198.18.0.2"); v.Verdict != queue.NFAccept {
		t.Fatalf("live grant lost on reload: %+v", v)
	}

	stop()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d, want 0\n%s", code, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not stop")
	}
	if f.applied != 1 || f.removed != 1 {
		t.Errorf("rules applied %d and removed %d times, want 1 and 1", f.applied, f.removed)
	}
}

func TestDaemonFailuresApplyNothingOrKeepRules(t *testing.T) {
	_, cfg := daemonPKI(t)
	tests := []struct {
		name        string
		openErr     error
		applyErr    error
		wantApplied int
	}{
		{"queue cannot bind: no rules", errors.New("bind: operation not permitted"), nil, 0},
		{"rules fail: exit", nil, errors.New("iptables: boom"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeOS()
			f.openErr, f.applyErr = tt.openErr, tt.applyErr
			var logs syncBuffer
			code := serveWith(context.Background(), &cfg, nil, &logs, f.deps())
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			if f.applied != tt.wantApplied || f.removed != 0 {
				t.Errorf("applied %d removed %d, want %d and 0", f.applied, f.removed, tt.wantApplied)
			}
		})
	}
}
