//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/testenv"
	"sknock/packet"
)

// TestIntegrationInspectCapture: tcpdump captures, on the gatekeeper's
// server, a real `sknock knock` (granted), a knock for a port the
// certificate does not allow, and a granted knock sent twice; some
// seconds later (past the timestamp tolerance) `sknock inspect` on the
// capture reports, for each, the verdict, reason and serial the daemon
// logged, judged at the capture's time.
func TestIntegrationInspectCapture(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := exec.LookPath("tcpdump")
	testenv.Require(t, err == nil, "tcpdump not installed")
	_, sknock := e2e.BuildBinaries(t)
	n := e2e.NewNet(t)
	p := e2e.NewPKI(t)
	alice := p.Client(t, "alice", "tcp/2000")
	e2e.ServeTCPEcho(t, n.Server, ":2000")
	d := e2e.StartDaemon(t, n, p.Config(`knock:
  ports: "10000:60000"
  timestamp_tolerance: 2s
gate:
  protect: [tcp/2000, tcp/3000]
  policy: drop
`))

	capture := filepath.Join(t.TempDir(), "knocks.pcap")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dump := n.Server.Command(ctx, "tcpdump", "-i", "any", "-Z", "root", "--immediate-mode", "-U", "-s", "0", "-w", capture, "udp dst portrange 10000-60000")
	stderr, err := dump.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			if strings.Contains(s.Text(), "listening on") {
				close(listening)
			}
		}
	}()
	select {
	case <-listening:
	case <-time.After(10 * time.Second):
		t.Fatal("tcpdump did not start listening")
	}

	from := len(d.Lines())
	kctx, kcancel := context.WithTimeout(ctx, 30*time.Second)
	defer kcancel()
	knock := n.Client.Command(kctx, sknock, "knock", "--pkcs12", alice.PKCS12, "--server-cert", p.ServerCert,
		"--password-file", p.PasswordFile, e2e.ServerV4.String(), "tcp/2000")
	if out, err := knock.CombinedOutput(); err != nil {
		t.Fatalf("sknock knock: %v\n%s", err, out)
	}
	logged := []e2e.Line{d.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" })}
	send := func(datagram []byte, port uint16) {
		t.Helper()
		from := len(d.Lines())
		if err := e2e.SendUDP(n.Client, e2e.AddrPort(e2e.ServerV4, port), datagram); err != nil {
			t.Fatal(err)
		}
		logged = append(logged, d.WaitLine(from, 5*time.Second, func(l e2e.Line) bool { return l.Msg() == "knock" }))
	}
	send(alice.Seal(t, p.ServerKey, packet.TCP, 3000, e2e.ClientV4), 23456)
	again := alice.Seal(t, p.ServerKey, packet.TCP, 2000, e2e.ClientV4)
	send(again, 23457)
	send(again, 23458) // the same datagram: a replay

	time.Sleep(500 * time.Millisecond) // let tcpdump -U write the last packet
	dump.Process.Signal(syscall.SIGINT)
	dump.Wait()
	time.Sleep(2500 * time.Millisecond) // past the 2 s tolerance: judging now would say stale_timestamp

	ins := exec.Command(sknock, "inspect", "--pkcs12", p.ServerPKCS12, "--password-file", p.PasswordFile,
		"--crl", p.CRLFile(), "--tolerance", "2s", capture)
	var out, errOut bytes.Buffer
	ins.Stdout, ins.Stderr = &out, &errOut
	err = ins.Run()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("sknock inspect: %v (want exit 1: some denied)\nstdout %s\nstderr %s", err, out.String(), errOut.String())
	}
	var got []map[string]any
	dec := json.NewDecoder(&out)
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != len(logged) {
		t.Fatalf("inspect judged %d knocks, the daemon logged %d:\n%v", len(got), len(logged), got)
	}
	wantReasons := []string{"granted", "not_authorized", "granted", "replay"}
	for i, l := range logged {
		g := got[i]
		reason := l.String("reason")
		if reason == "" { // a grant's line has none
			reason = "granted"
		}
		str := func(v any) string {
			if v == nil {
				return ""
			}
			return v.(string)
		}
		if str(g["verdict"]) != l.String("verdict") || str(g["reason"]) != reason || reason != wantReasons[i] ||
			str(g["serial"]) != l.String("serial") || str(g["source"]) != l.String("source") || g["time_from"] != "capture" {
			t.Errorf("knock %d: inspect %v\ndaemon %v", i+1, g, l)
		}
	}
}
