package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"sknock/internal/testpki"
)

// knockPKI is a CA in a temporary directory with the bundles a knock needs;
// the client may open tcp/2000 and udp/8000.
type knockPKI struct {
	dir, clientPFX, serverPFX, serverCert, passwordFile string
	ca                                                  *testpki.PKI
}

func newKnockPKI(t *testing.T) knockPKI {
	t.Helper()
	p := testpki.New(t, &testpki.Options{
		Server: "gatekeeper", Password: "portknocking",
		Clients: map[string]string{"alice": "tcp/2000,udp/8000"},
	})
	return knockPKI{
		dir:          p.Dir,
		clientPFX:    p.Issued(t, "alice").PKCS12,
		serverPFX:    p.ServerPKCS12,
		serverCert:   p.ServerCert,
		passwordFile: p.PasswordFile,
		ca:           p,
	}
}

// allowing returns p with a new client certificate allowing allow (the
// --allow syntax), for tests that knock random loopback ports: the client
// refuses to knock for a port its certificate does not allow.
func (p knockPKI) allowing(t *testing.T, allow string) knockPKI {
	t.Helper()
	name := fmt.Sprintf("c%d", time.Now().UnixNano())
	p.clientPFX = p.ca.Client(t, name, allow).PKCS12
	return p
}

// args returns the flags naming p's files, then extra.
func (p knockPKI) args(extra ...string) []string {
	return append([]string{"knock", "--pkcs12", p.clientPFX, "--server-cert", p.serverCert, "--password-file", p.passwordFile}, extra...)
}

type knockRun struct {
	code           int
	stdout, stderr string
}

func runKnockForTest(stdin io.Reader, args ...string) knockRun {
	var out, errOut strings.Builder
	code := run(args, stdin, &out, &errOut)
	return knockRun{code: code, stdout: out.String(), stderr: errOut.String()}
}

// knockListener is a loopback UDP socket standing in for the knock port.
func knockListener(t *testing.T) (*net.UDPConn, string) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, strconv.Itoa(conn.LocalAddr().(*net.UDPAddr).Port)
}

// closedPort returns a loopback TCP port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func TestKnockUsageErrors(t *testing.T) {
	p := newKnockPKI(t)
	tests := []struct {
		name     string
		give     []string
		env      string // SKNOCK_PASSWORD
		wantCode int
		want     string // in stderr
	}{
		{name: "malformed PROTO/PORT", give: p.args("127.0.0.1", "tcp:22"), wantCode: 2, want: `"tcp:22"`},
		{name: "unknown protocol", give: p.args("127.0.0.1", "icmp/1"), wantCode: 2, want: `"icmp/1"`},
		{name: "port out of range", give: p.args("127.0.0.1", "tcp/70000"), wantCode: 2, want: "tcp/70000"},
		{name: "no port", give: p.args("127.0.0.1"), wantCode: 2, want: "PROTO/PORT"},
		{name: "no pkcs12", give: []string{"knock", "--server-cert", p.serverCert, "127.0.0.1", "tcp/22"}, wantCode: 2, want: "--pkcs12"},
		{name: "no server cert", give: []string{"knock", "--pkcs12", p.clientPFX, "127.0.0.1", "tcp/22"}, wantCode: 2, want: "--server-cert"},
		{name: "-4 and -6", give: p.args("-4", "-6", "127.0.0.1", "tcp/22"), wantCode: 2, want: "-4 and -6"},
		{name: "unknown flag", give: p.args("--bogus", "127.0.0.1", "tcp/22"), wantCode: 2, want: "bogus"},
		{name: "bad source ip", give: p.args("--source-ip", "nope", "127.0.0.1", "tcp/22"), wantCode: 2, want: "--source-ip"},
		{name: "connect with udp", give: p.args("--connect", "127.0.0.1", "udp/8000"), wantCode: 2, want: "--connect"},
		{name: "negative key cache", give: p.args("--key-cache", "-1s", "127.0.0.1", "tcp/22"), wantCode: 2, want: "--key-cache"},
		{name: "key cache over a day", give: p.args("--key-cache", "25h", "127.0.0.1", "tcp/22"), wantCode: 2, want: "--key-cache"},
		{name: "connect with two ports", give: p.args("--connect", "127.0.0.1", "tcp/22", "tcp/23"), wantCode: 2, want: "--connect"},
		{name: "wrong password", give: []string{"knock", "--pkcs12", p.clientPFX, "--server-cert", p.serverCert, "127.0.0.1", "tcp/22"}, env: "wrong", wantCode: 2, want: "password"},
		{name: "no password", give: []string{"knock", "--pkcs12", p.clientPFX, "--server-cert", p.serverCert, "127.0.0.1", "tcp/22"}, wantCode: 2, want: "password"},
		{name: "missing bundle", give: []string{"knock", "--pkcs12", p.dir + "/nobody.pfx", "--server-cert", p.serverCert, "--password-file", p.passwordFile, "127.0.0.1", "tcp/22"}, wantCode: 2, want: p.dir + "/nobody.pfx"},
		{name: "missing server cert", give: []string{"knock", "--pkcs12", p.clientPFX, "--server-cert", p.dir + "/nobody.pem", "--password-file", p.passwordFile, "127.0.0.1", "tcp/22"}, wantCode: 2, want: p.dir + "/nobody.pem"},
		{name: "missing password file", give: []string{"knock", "--pkcs12", p.clientPFX, "--server-cert", p.serverCert, "--password-file", p.dir + "/nopass", "127.0.0.1", "tcp/22"}, wantCode: 2, want: p.dir + "/nopass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(passwordEnv, tt.env)
			got := runKnockForTest(nil, tt.give...)
			if got.code != tt.wantCode || !strings.Contains(got.stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", got.code, got.stderr, tt.wantCode, tt.want)
			}
			if strings.Count(strings.TrimSpace(got.stderr), "\n") != 0 {
				t.Errorf("stderr is not one line: %q", got.stderr)
			}
		})
	}
}

func TestKnockFlagsAfterArguments(t *testing.T) {
	f, err := parseKnockFlags([]string{"host", "--pkcs12", "a.pfx", "TCP/22", "--server-cert", "s.pem", "-q", "udp/8000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if f.host != "host" || len(f.reqs) != 2 || f.reqs[0].String() != "tcp/22" || f.reqs[1].String() != "udp/8000" || f.bundle != "a.pfx" || !f.quiet {
		t.Errorf("parsed %+v", f)
	}
}

func TestKnockKeyCacheFlag(t *testing.T) {
	for give, want := range map[string]time.Duration{"": 0, "0": 0, "90m": 90 * time.Minute} {
		args := []string{"--pkcs12", "a.pfx", "--server-cert", "s.pem", "host", "tcp/22"}
		if give != "" {
			args = append(args, "--key-cache", give)
		}
		f, err := parseKnockFlags(args, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := f.config()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.KeyCache != want {
			t.Errorf("--key-cache %q: Config.KeyCache = %s, want %s", give, cfg.KeyCache, want)
		}
	}
}

// TestKnockInspectGrants captures what `sknock knock` sends and has
// `sknock inspect` decide it, as the gatekeeper would.
func TestKnockInspectGrants(t *testing.T) {
	p := newKnockPKI(t)
	listener, port := knockListener(t)
	tests := []struct {
		name     string
		give     string
		wantLine string
		want     map[string]any
	}{
		{name: "udp", give: "udp/8000", wantLine: "udp/8000 knocked (UDP cannot be verified)", want: map[string]any{"proto": "udp", "port": 8000.0}},
		{name: "tcp unverified", give: "tcp/2000", wantLine: "tcp/2000 knocked (not verified)", want: map[string]any{"proto": "tcp", "port": 2000.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runKnockForTest(nil, p.args("--knock-port", port, "--no-verify", "127.0.0.1", tt.give)...)
			if got.code != 0 || strings.TrimSpace(got.stdout) != tt.wantLine {
				t.Fatalf("exit %d, stdout %q, stderr %q; want 0 and %q", got.code, got.stdout, got.stderr, tt.wantLine)
			}
			listener.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 65536)
			n, _, err := listener.ReadFromUDP(buf)
			if err != nil {
				t.Fatal(err)
			}
			packet := filepath.Join(t.TempDir(), "knock.bin")
			if err := os.WriteFile(packet, buf[:n], 0o600); err != nil {
				t.Fatal(err)
			}
			ins := runKnockForTest(nil, "inspect", "--pkcs12", p.serverPFX, "--password-file", p.passwordFile, "--source", "127.0.0.1", packet)
			var decided map[string]any
			if err := json.Unmarshal([]byte(ins.stdout), &decided); err != nil {
				t.Fatalf("inspect printed %q (stderr %q): %v", ins.stdout, ins.stderr, err)
			}
			want := map[string]any{"verdict": "grant", "client_ip": "127.0.0.1", "subject": "CN=alice"}
			for k, v := range tt.want {
				want[k] = v
			}
			for k, v := range want {
				if decided[k] != v {
					t.Errorf("%s = %v, want %v (all: %v)", k, decided[k], v, decided)
				}
			}
			if s, ok := decided["serial"].(string); !ok || s == "" || s == "0" {
				t.Errorf("serial = %v, want the client certificate's", decided["serial"])
			}
			if ins.code != 0 {
				t.Errorf("inspect exit %d, want 0", ins.code)
			}
		})
	}
}

func TestKnockVerifiesTCP(t *testing.T) {
	p := newKnockPKI(t)
	_, port := knockListener(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	open := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	closed := closedPort(t)
	p = p.allowing(t, "tcp/"+open+",tcp/"+closed+",udp/8000")

	start := time.Now()
	got := runKnockForTest(nil, p.args("--knock-port", port, "--retries", "1", "--timeout", "100ms", "127.0.0.1", "tcp/"+open, "tcp/"+closed, "udp/8000")...)
	elapsed := time.Since(start)
	if got.code != 1 {
		t.Errorf("exit %d, want 1 (tcp/%s is closed)", got.code, closed)
	}
	// No gatekeeper here: the listening port was open before the knock,
	// and the client says so rather than "open (verified)".
	if strings.Contains(got.stdout, "tcp/"+open) || !strings.Contains(got.stdout, "udp/8000 knocked (UDP cannot be verified)") {
		t.Errorf("stdout %q, want udp/8000 knocked and nothing of tcp/%s", got.stdout, open)
	}
	lines := strings.Split(strings.TrimSpace(got.stderr), "\n")
	if len(lines) != 3 || lines[0] != "sknock knock: tcp/"+open+" was already open to 127.0.0.1; this knock's own verdict is in the gatekeeper's log" ||
		!strings.HasPrefix(lines[1], "sknock knock: tcp/"+closed+" on 127.0.0.1: port did not open after 2 knocks") ||
		!strings.HasSuffix(lines[2], "try --protocol 1") {
		t.Errorf("stderr %q, want tcp/%s already open, one line about tcp/%s and the hint to try --protocol 1", got.stderr, open, closed)
	}
	if elapsed > 2*100*time.Millisecond+2*time.Second {
		t.Errorf("took %s, want about (retries+1) × timeout", elapsed)
	}
}

// TestKnockConnectSplices runs the ProxyCommand mode against a loopback
// service that reads until EOF before answering: the answer arrives only
// if stdin's EOF became a half-close.
func TestKnockConnectSplices(t *testing.T) {
	p := newKnockPKI(t)
	_, port := knockListener(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer conn.Close()
		data, err := io.ReadAll(conn)
		if err == nil {
			_, err = io.WriteString(conn, "got: "+string(data))
		}
		served <- err
	}()
	service := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	p = p.allowing(t, "tcp/"+service)
	got := runKnockForTest(strings.NewReader("hello over sknock\n"), p.args("--connect", "--knock-port", port, "127.0.0.1", "tcp/"+service)...)
	// No gatekeeper here: the port was open before the knock, which the
	// client says (exit 3) while it splices all the same.
	if got.code != exitAlreadyOpen || got.stdout != "got: hello over sknock\n" || !strings.Contains(got.stderr, "was already open to 127.0.0.1") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 3, the echo and the port already open", got.code, got.stdout, got.stderr)
	}
	if err := <-served; err != nil {
		t.Errorf("service: %v", err)
	}
}

// TestKnockConnectRemoteClosesFirst: the remote's close ends the splice
// even though stdin never reaches EOF.
func TestKnockConnectRemoteClosesFirst(t *testing.T) {
	p := newKnockPKI(t)
	_, port := knockListener(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		line, _ := bufio.NewReader(conn).ReadString('\n')
		io.WriteString(conn, "bye "+line)
		conn.Close()
	}()
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	go io.WriteString(stdinW, "alice\n")
	service := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	p = p.allowing(t, "tcp/"+service)
	got := runKnockForTest(stdinR, p.args("--connect", "--knock-port", port, "127.0.0.1", "tcp/"+service)...)
	if got.code != exitAlreadyOpen || got.stdout != "bye alice\n" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 3 (no gatekeeper: open already) and %q", got.code, got.stdout, got.stderr, "bye alice\n")
	}
}

func TestKnockConnectClosedPortFails(t *testing.T) {
	p := newKnockPKI(t)
	_, port := knockListener(t)
	closed := closedPort(t)
	p = p.allowing(t, "tcp/"+closed)
	got := runKnockForTest(strings.NewReader(""), p.args("--connect", "--retries", "0", "--timeout", "50ms", "--knock-port", port, "127.0.0.1", "tcp/"+closed)...)
	if got.code != 1 || got.stdout != "" || !strings.Contains(got.stderr, "did not open") {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing on stdout, the reason on stderr", got.code, got.stdout, got.stderr)
	}
}
