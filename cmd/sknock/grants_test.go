package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"sknock/internal/control"
)

// fakeControl answers every request on a unix socket in a test directory
// with answer, and records the requests.
func fakeControl(t *testing.T, answer func(control.Request) control.Response) (string, func() []control.Request) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var asked []control.Request
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := control.ReadRequest(conn)
			if err == nil {
				mu.Lock()
				asked = append(asked, req)
				mu.Unlock()
				control.WriteResponse(conn, answer(req))
			}
			conn.Close()
		}
	}()
	return path, func() []control.Request {
		mu.Lock()
		defer mu.Unlock()
		return append([]control.Request(nil), asked...)
	}
}

func TestGrantsCommands(t *testing.T) {
	exp := time.Now().Add(12 * time.Second).UTC()
	grant := control.Grant{Source: "198.18.0.2", Proto: "tcp", Port: 2000, Subject: "CN=alice", Serial: "4242", Expires: exp, SecondsLeft: 12}
	path, asked := fakeControl(t, func(req control.Request) control.Response {
		switch req.Command {
		case control.CommandGrants:
			return control.Response{Grants: []control.Grant{grant}, Live: 1}
		case control.CommandRevoke:
			return control.Response{Grants: []control.Grant{grant}, Connections: 1}
		}
		return control.Response{Error: "unexpected"}
	})
	tests := []struct {
		name     string
		give     []string
		wantCode int
		wantOut  []string
		wantReq  control.Request
	}{
		{"list", []string{"list", "--socket", path}, 0, []string{"SOURCE", "198.18.0.2", "tcp/2000", "4242", "CN=alice"}, control.Request{Command: "grants"}},
		{"list json", []string{"list", "--json", "--socket", path}, 0, []string{`"seconds_left": 12`, `"serial": "4242"`}, control.Request{Command: "grants"}},
		{"revoke source", []string{"revoke", "--source", "198.18.0.2", "--socket", path}, 0, []string{"ended 1 grant(s) and 1 connection(s)"}, control.Request{Command: "revoke", Source: "198.18.0.2"}},
		{"revoke serial", []string{"revoke", "--serial", "0x10", "--socket", path}, 0, []string{"ended 1"}, control.Request{Command: "revoke", Serial: "0x10"}},
		{"revoke all", []string{"revoke", "--all", "--socket", path}, 0, []string{"ended 1"}, control.Request{Command: "revoke", All: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			n := len(asked())
			if code := run(append([]string{"grants"}, tt.give...), nil, &out, &errOut); code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut.String())
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if got := asked(); len(got) != n+1 || got[n] != tt.wantReq {
				t.Errorf("requests %+v, want the last to be %+v", got[n:], tt.wantReq)
			}
		})
	}
}

func TestGrantsBadFlags(t *testing.T) {
	for _, give := range [][]string{
		{"grants"},
		{"grants", "revoke"},
		{"grants", "revoke", "--all", "--source", "198.18.0.2"},
		{"grants", "nuke"},
		{"status", "extra"},
	} {
		var out, errOut bytes.Buffer
		if code := run(give, nil, &out, &errOut); code != 2 || errOut.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", give, code, errOut.String())
		}
	}
}

func TestGrantsUnreachable(t *testing.T) {
	var out, errOut bytes.Buffer
	path := filepath.Join(t.TempDir(), "none.sock")
	if code := run([]string{"grants", "list", "--socket", path}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), path) {
		t.Fatalf("exit %d, stderr %q; want 1 naming %s", code, errOut.String(), path)
	}
}

func TestStatusCommand(t *testing.T) {
	st := &control.Status{Version: "1.2.3", Config: "/etc/sknock/config.yaml", RulesHealthy: false, Policy: "drop", Protect: "tcp/2000",
		Trust: control.Trust{CRL: true, CRLRevoked: 2, CRLStale: true, Warnings: []control.Warning{{Check: "crl_stale", Text: "publish a fresh CRL"}}}, Counters: map[string]uint64{"knocks_granted": 5}}
	path, _ := fakeControl(t, func(control.Request) control.Response { return control.Response{Status: st} })
	var out, errOut bytes.Buffer
	if code := run([]string{"status", "--socket", path}, nil, &out, &errOut); code != 3 {
		t.Fatalf("exit %d, want 3 (rules damaged, CRL stale); stderr %s", code, errOut.String())
	}
	for _, w := range []string{"sknockd 1.2.3", "/etc/sknock/config.yaml", "DAMAGED", "STALE", "knocks_granted", "5", "WARNING:  crl_stale: publish a fresh CRL"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status output lacks %q:\n%s", w, out.String())
		}
	}
}

// TestControlSocketFromConfig: grants, status and reload find the socket
// in sknockd's configuration (--config), and an error says which socket
// was tried and where it came from.
func TestControlSocketFromConfig(t *testing.T) {
	path, _ := fakeControl(t, func(req control.Request) control.Response {
		return control.Response{Grants: []control.Grant{}, Live: 0}
	})
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(config, []byte("gate:\n  policy: drop\ncontrol:\n  socket: "+path+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"grants", "list", "--config", config}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "no grants") {
		t.Errorf("grants list --config: exit %d, %q %q; want the grants from the socket the config names", code, out.String(), errOut.String())
	}
	missing := filepath.Join(dir, "gone.sock")
	os.WriteFile(config, []byte("control:\n  socket: "+missing+"\n"), 0o600)
	out.Reset()
	errOut.Reset()
	code := run([]string{"status", "--config", config}, nil, &out, &errOut)
	for _, want := range []string{missing, "control.socket in " + config, "sknockd is not running"} {
		if code != 1 || !strings.Contains(errOut.String(), want) {
			t.Errorf("status --config with no daemon: exit %d, stderr %q; want 1 and %q", code, errOut.String(), want)
		}
	}
	if strings.Contains(errOut.String(), "are you root") {
		t.Errorf("stderr %q asks whether root is root", errOut.String())
	}
	errOut.Reset()
	if code := run([]string{"reload", "--config", filepath.Join(dir, "none.yaml")}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "none.yaml") {
		t.Errorf("reload --config MISSING: exit %d, stderr %q; want 1 naming the file", code, errOut.String())
	}
}

// TestReloadCommand: sknock reload prints the changed keys, or exits 1
// with sknockd's own error; status shows the last reload.
func TestReloadCommand(t *testing.T) {
	at := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	refuse := false
	path, _ := fakeControl(t, func(req control.Request) control.Response {
		switch req.Command {
		case control.CommandReload:
			if refuse {
				return control.Response{Error: "config.yaml: line 12: knock.timestamp_tolerance: 7m is above 5m0s"}
			}
			return control.Response{Reload: &control.Reload{Time: at, Trigger: "sknock reload", Changed: []string{"gate.policy", "gate.protect"}}}
		case control.CommandStatus:
			return control.Response{Status: &control.Status{RulesHealthy: true, LastReload: &control.Reload{Time: at, Trigger: "SIGHUP", Error: "line 3: bad"}}}
		}
		return control.Response{Error: "unexpected"}
	})
	var out, errOut bytes.Buffer
	if code := run([]string{"reload", "--socket", path}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "changed: gate.policy, gate.protect") {
		t.Errorf("reload: exit %d, %q %q; want 0 and the changed keys", code, out.String(), errOut.String())
	}
	refuse = true
	out.Reset()
	if code := run([]string{"reload", "--socket", path}, nil, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "line 12: knock.timestamp_tolerance") {
		t.Errorf("refused reload: exit %d, stderr %q; want 1 and sknockd's error", code, errOut.String())
	}
	out.Reset()
	if code := run([]string{"status", "--socket", path}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "reload:   REFUSED at 2026-12-07T13:00:00Z (SIGHUP), previous configuration in force: line 3: bad") {
		t.Errorf("status: exit %d, %q; want the last reload, refused", code, out.String())
	}
}

// TestGrantsRevokeHeader: the grants a revoke ended are printed under
// their own header, not the live grants'.
func TestGrantsRevokeHeader(t *testing.T) {
	grant := control.Grant{Source: "198.18.0.2", Proto: "tcp", Port: 2000, SecondsLeft: 12}
	path, _ := fakeControl(t, func(req control.Request) control.Response {
		return control.Response{Grants: []control.Grant{grant}}
	})
	var out, errOut bytes.Buffer
	run([]string{"grants", "revoke", "--all", "--socket", path}, nil, &out, &errOut)
	if !strings.Contains(out.String(), "ENDED: SOURCE") || strings.Contains(out.String(), "SECONDS LEFT") {
		t.Errorf("grants revoke printed\n%s\nwant the ended grants under an ENDED header", out.String())
	}
}
