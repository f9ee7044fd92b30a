package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sknock/internal/testpki"
	"sknock/packet"
	"sknock/pki"
)

// capturedUDP is one frame of a test capture.
type capturedUDP struct {
	at      time.Time
	src     string
	dport   uint16
	payload []byte
}

// rawIPPcap writes frames as a little-endian microsecond pcap of raw
// IPv4 (link type 101), as tcpdump would.
func rawIPPcap(frames []capturedUDP) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, 0xa1b2c3d4)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = append(b, make([]byte, 8)...)
	b = le.AppendUint32(b, 262144)
	b = le.AppendUint32(b, 101)
	for _, f := range frames {
		udp := binary.BigEndian.AppendUint16(nil, 40000)
		udp = binary.BigEndian.AppendUint16(udp, f.dport)
		udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(f.payload)))
		udp = append(udp, 0, 0)
		udp = append(udp, f.payload...)
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		src, dst := netip.MustParseAddr(f.src).As4(), [4]byte{198, 18, 0, 1}
		ip = append(append(append(ip, src[:]...), dst[:]...), udp...)
		b = le.AppendUint32(b, uint32(f.at.Unix()))
		b = le.AppendUint32(b, uint32(f.at.Nanosecond()/1000))
		b = le.AppendUint32(b, uint32(len(ip)))
		b = le.AppendUint32(b, uint32(len(ip)))
		b = append(b, ip...)
	}
	return b
}

// TestInspectCapture: each knock of a capture is judged at its capture
// time from its captured source, half an hour later: the grant stays a grant,
// the unauthorised port says not_authorized (not stale_timestamp), a
// repeated datagram is a replay, a late one stale; other UDP is skipped.
func TestInspectCapture(t *testing.T) {
	p := testpki.New(t, &testpki.Options{Clients: map[string]string{"alice": "tcp/2000"}})
	p.WriteCRL(t)
	at := time.Now().Add(-30 * time.Minute).Truncate(time.Second) // certificates are backdated 1 h
	alice := netip.MustParseAddr("198.18.0.2")
	grant := p.Seal(t, "alice", packet.TCP, 2000, alice, at)
	frames := []capturedUDP{
		{at.Add(100 * time.Millisecond), "198.18.0.2", 23456, grant},
		{at.Add(200 * time.Millisecond), "198.18.0.9", 53, []byte("a DNS answer, not a knock")},
		{at.Add(300 * time.Millisecond), "198.18.0.2", 23456, grant},
		{at.Add(time.Second), "198.18.0.2", 30001, p.Seal(t, "alice", packet.TCP, 3000, alice, at.Add(time.Second))},
		{at.Add(20 * time.Second), "198.18.0.2", 30002, p.Seal(t, "alice", packet.TCP, 2000, alice, at.Add(time.Second))},
		{at.Add(21 * time.Second), "198.18.0.7", 30003, p.Seal(t, "alice", packet.TCP, 2000, alice, at.Add(21*time.Second))},
	}
	path := filepath.Join(t.TempDir(), "capture.pcap")
	if err := os.WriteFile(path, rawIPPcap(frames), 0o600); err != nil {
		t.Fatal(err)
	}
	run1 := func(extra ...string) ([]map[string]any, int, string) {
		args := append([]string{"inspect", "--pkcs12", p.ServerPKCS12, "--password-file", p.PasswordFile, "--crl", p.CRLFile()}, extra...)
		var out, errOut strings.Builder
		code := run(append(args, path), nil, &out, &errOut)
		var got []map[string]any
		dec := json.NewDecoder(strings.NewReader(out.String()))
		for dec.More() {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
			got = append(got, m)
		}
		return got, code, errOut.String()
	}

	got, code, stderr := run1()
	want := []map[string]any{
		{"frame": 1.0, "verdict": "grant", "reason": "granted", "source": "198.18.0.2", "destination": "198.18.0.1:23456", "time_from": "capture"},
		{"frame": 3.0, "verdict": "deny", "reason": "replay"},
		{"frame": 4.0, "verdict": "deny", "reason": "not_authorized", "port": 3000.0},
		{"frame": 5.0, "verdict": "deny", "reason": "stale_timestamp"},
		{"frame": 6.0, "verdict": "deny", "reason": "source_mismatch", "source": "198.18.0.7"},
	}
	if code != 1 || len(got) != len(want) {
		t.Fatalf("exit %d, %d objects (stderr %q): %v; want exit 1 and %d", code, len(got), stderr, got, len(want))
	}
	for i, w := range want {
		for k, v := range w {
			if got[i][k] != v {
				t.Errorf("knock %d: %s = %v, want %v (all: %v)", i, k, got[i][k], v, got[i])
			}
		}
	}
	if serial := p.Issued(t, "alice").Serial(); got[0]["serial"] != serial {
		t.Errorf("serial = %#v, want the string %q", got[0]["serial"], serial)
	}
	if got[0]["time"] != at.Add(100*time.Millisecond).UTC().Format(time.RFC3339Nano) {
		t.Errorf("time = %v, want the capture time %v", got[0]["time"], at.Add(100*time.Millisecond).UTC())
	}

	got, code, _ = run1("--frame", "4")
	if code != 1 || len(got) != 1 || got[0]["reason"] != "not_authorized" {
		t.Errorf("--frame 4: exit %d, %v; want one not_authorized", code, got)
	}
	got, code, _ = run1("--frame", "1")
	if code != 0 || len(got) != 1 || got[0]["verdict"] != "grant" {
		t.Errorf("--frame 1: exit %d, %v; want one grant, exit 0", code, got)
	}
	_, code, stderr = run1("--frame", "2")
	if code != 2 || !strings.Contains(stderr, "frame 2 is no UDP datagram of 300 bytes or more to ports 10000:60000") {
		t.Errorf("--frame 2 (the DNS answer): exit %d, stderr %q; want 2 saying why", code, stderr)
	}
	_, code, stderr = run1("--source", "198.18.0.2")
	if code != 2 || !strings.Contains(stderr, "--source is for a raw payload") {
		t.Errorf("--source on a capture: exit %d, stderr %q", code, stderr)
	}
}

// TestInspectRawJudgedAtItsTimestamp: a raw payload inspected long after
// is judged at its own timestamp, so the real reason shows; --at still
// judges it as of another time.
func TestInspectRawJudgedAtItsTimestamp(t *testing.T) {
	p := testpki.New(t, &testpki.Options{Clients: map[string]string{"alice": "tcp/2000"}})
	sealed := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	path := filepath.Join(t.TempDir(), "knock.bin")
	if err := os.WriteFile(path, p.Seal(t, "alice", packet.TCP, 3000, netip.MustParseAddr("198.18.0.2"), sealed), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		extra      []string
		wantReason string
		wantFrom   string
	}{
		{nil, "not_authorized", "knock_timestamp"},
		{[]string{"--at", "1900000000"}, "stale_timestamp", "--at"},
	} {
		var out, errOut strings.Builder
		args := append([]string{"inspect", "--pkcs12", p.ServerPKCS12, "--password-file", p.PasswordFile}, tt.extra...)
		code := run(append(args, path), nil, &out, &errOut)
		var got map[string]any
		if err := json.Unmarshal([]byte(out.String()), &got); err != nil || code != 1 {
			t.Fatalf("exit %d, output %q, stderr %q: %v", code, out.String(), errOut.String(), err)
		}
		if got["reason"] != tt.wantReason || got["time_from"] != tt.wantFrom {
			t.Errorf("%v: reason %v from %v, want %s from %s", tt.extra, got["reason"], got["time_from"], tt.wantReason, tt.wantFrom)
		}
	}
}

// TestInspectIntermediateTwoCRLs: --ca with an intermediate's chain and
// one --crl per CA judge as sknockd does: dave, issued by the
// intermediate, is granted until the root's CRL revokes the intermediate.
func TestInspectIntermediateTwoCRLs(t *testing.T) {
	p := testpki.New(t, nil)
	p.WriteCRL(t)
	dave, sub := p.Intermediate(t, "ops", "dave")
	path := filepath.Join(t.TempDir(), "knock.bin")
	if err := os.WriteFile(path, dave.Seal(t, p.ServerKey, packet.TCP, 2000, netip.MustParseAddr("198.18.0.2"), time.Now()), 0o600); err != nil {
		t.Fatal(err)
	}
	inspect := func() map[string]any {
		var out, errOut strings.Builder
		run([]string{"inspect", "--pkcs12", p.ServerPKCS12, "--password-file", p.PasswordFile, "--ca", filepath.Join(sub, "ca.pem"),
			"--crl", p.CRLFile(), "--crl", filepath.Join(sub, "ca.crl"), path}, nil, &out, &errOut)
		var got map[string]any
		if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
			t.Fatalf("inspect: %q %q: %v", out.String(), errOut.String(), err)
		}
		return got
	}
	if got := inspect(); got["verdict"] != "grant" {
		t.Fatalf("dave before the revocation: %v", got)
	}
	if err := pki.Revoke(p.Dir, "ops"); err != nil {
		t.Fatal(err)
	}
	p.WriteCRL(t)
	if got := inspect(); got["reason"] != "revoked" || !strings.Contains(got["detail"].(string), "issuing CA CN=sknock CA ops") {
		t.Errorf("dave after the root revoked ops: %v", got)
	}
}

// TestInspectCaptureV2: v2 knocks in a capture are judged in order with
// one replay memory keyed by their enc: a knock refused for its source
// is remembered, so its copy from the right source is a replay.
func TestInspectCaptureV2(t *testing.T) {
	at := time.UnixMilli(1796083200000)
	read := func(name string) []byte {
		data, err := os.ReadFile(vector(t, "v2/"+name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	multi, tcp22 := read("knock2-a-multi-v4.bin"), read("knock2-b-tcp22-v4.bin")
	frames := []capturedUDP{
		{at, "198.18.0.2", 23456, multi},
		{at.Add(time.Millisecond), "198.18.0.2", 23457, multi},
		{at.Add(2 * time.Millisecond), "198.18.0.2", 23458, read("knock2-a-badmac.bin")},
		{at.Add(3 * time.Millisecond), "198.18.0.9", 23459, tcp22},
		{at.Add(4 * time.Millisecond), "198.18.0.3", 23460, tcp22},
	}
	path := filepath.Join(t.TempDir(), "capture.pcap")
	if err := os.WriteFile(path, rawIPPcap(frames), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SKNOCK_PASSWORD", "portknocking")
	var out, errOut strings.Builder
	code := run([]string{"inspect", "--pkcs12", vector(t, "server.pfx"), "--ca", vector(t, "ca.pem"), "--crl", vector(t, "ca.crl"), path}, nil, &out, &errOut)
	var got []string
	dec := json.NewDecoder(strings.NewReader(out.String()))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("output %q: %v", out.String(), err)
		}
		got = append(got, fmt.Sprint(m["reason"]))
	}
	want := []string{"granted", "replay", "bad_mac1", "source_mismatch", "replay"}
	if code != 1 || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("exit %d, reasons %v (stderr %q); want exit 1 and %v", code, got, errOut.String(), want)
	}
}
