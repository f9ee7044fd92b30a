package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"sknock/gate"
	"sknock/internal/testpki"
	"sknock/packet"
)

// TestConnRecordOutlivesRestart: a connection let in by one run is in
// the record the next run restores from knock.replay_file + ".conns";
// when alice was revoked while sknockd was stopped, the next run ends
// her connection as it starts. A damaged file is logged, not restored,
// and replaced by the next save.
func TestConnRecordOutlivesRestart(t *testing.T) {
	dir, cfg := daemonPKI(t)
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	injectKnock(t, f, "198.18.0.2", sealFor(t, dir, "alice", 2000, "198.18.0.2"))
	if got := d.knocks.next(t, "knock").dec.Reason.String(); got != "granted" {
		t.Fatalf("alice's knock: %s", got)
	}
	if v := synVerdict(t, f, "198.18.0.2"); !grantVerdict(v) {
		t.Fatalf("alice's SYN: %+v, want a grant", v)
	}
	d.stop() // saves the record
	path := connsFileOf(cfg.ReplayFile)
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("the record after a stop: %v", err)
	}

	testpki.Load(t, dir, nil).Revoke(t, "alice")
	ender := &fakeEnder{}
	d = runDaemon(t, &cfg, newFakeOS(), func(deps *OSDeps) { deps.Marker = ender })
	d.stop()
	if len(ender.ended) != 1 || ender.ended[0].Src.Addr().String() != "198.18.0.2" || ender.ended[0].Dst.Port() != 2000 {
		t.Errorf("ended %v at the start, want alice's connection to tcp/2000", ender.ended)
	}
	if lines := logLines(d.logs, "connections of certificates revoked while sknockd was stopped ended"); len(lines) != 1 {
		t.Errorf("log: %v, want one line about the ended connection", lines)
	}

	if err := os.WriteFile(path, []byte("sknockC1 but not really"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = runDaemon(t, &cfg, newFakeOS())
	d.stop()
	if lines := logLines(d.logs, "connection record of the previous run not restored"); len(lines) != 1 || !strings.Contains(lines[0], "damaged") {
		t.Errorf("log of a damaged record: %v", lines)
	}
	if data, err := os.ReadFile(path); err != nil || !strings.HasPrefix(string(data), "sknockC2") || len(data) < 28 {
		t.Errorf("the damaged record was not replaced: %q, %v", data, err)
	}
}

// TestConnsFileSavesOnlyChanges: a save with the record unchanged since
// the last one writes nothing (the file keeps its inode); a change is
// written at the next save.
func TestConnsFileSavesOnlyChanges(t *testing.T) {
	e := gate.NewEngine(gate.Config{Policy: gate.PolicyDrop}, nil)
	e.ConnsCapacity()
	cf := &connsFile{path: filepath.Join(t.TempDir(), "replay.conns"), engine: e, log: zap.NewNop()}
	inode := func() uint64 {
		t.Helper()
		fi, err := os.Stat(cf.path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	cf.save()
	first := inode()
	cf.save()
	if inode() != first {
		t.Error("an unchanged record was written again")
	}
	src := netip.MustParseAddr("198.18.0.2")
	e.Grants().Add(gate.Grant{Source: src, Proto: packet.TCP, Port: 2000}, gate.CertID{1}, time.Now().Add(time.Minute))
	h := packet.Header{Family: 4, Proto: packet.TCP, Src: src, Dst: netip.MustParseAddr("198.18.0.1"), SrcPort: 40000, DstPort: 2000}
	if v, _ := e.Verdict(&h, time.Now()); v != packet.Accept {
		t.Fatalf("SYN: %v", v)
	}
	cf.save()
	if inode() == first {
		t.Error("a new connection was not saved")
	}
	data, err := os.ReadFile(cf.path)
	if err != nil {
		t.Fatal(err)
	}
	restored := gate.NewEngine(gate.Config{Policy: gate.PolicyDrop}, nil)
	if res, err := restored.RestoreConns(data); err != nil || res.Conns != 1 {
		t.Errorf("restored %+v, %v; want the one connection", res, err)
	}
}
