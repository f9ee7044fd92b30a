//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/packet"
)

// replaySections are newEnv's sections under drop, with the replay file
// (%s) in the test's own directory.
const replaySections = `knock:
  ports: "40000:40100"
  queue: 100
  replay_file: %s
gate:
  queue: 101
  protect: [tcp/2000, tcp/3000, udp/8000, udp/8001]
  always_allow: [tcp/22]
  policy: drop
  open_duration: 1m
`

// TestIntegrationReplayAfterRestart is issue 12, Low 3: a knock stamped
// ahead of the server's clock, granted, then captured and sent again
// right after a restart (SIGTERM, and kill -9) is denied as a replay,
// while a fresh knock still opens.
func TestIntegrationReplayAfterRestart(t *testing.T) {
	requireTools(t)
	e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: "drop"}
	e.alice = e.pki.Client(t, "alice", "tcp/2000")
	e2e.ServeTCPEcho(t, e.net.Server, fmt.Sprintf(":%d", tcpA))
	replayFile := filepath.Join(t.TempDir(), "replay")
	e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(fmt.Sprintf(replaySections, replayFile)))
	c := e.client(false)
	for _, kill := range []bool{false, true} {
		name := map[bool]string{false: "sigterm", true: "kill -9"}[kill]
		// Stamped 4 s ahead: above the floor of a sknockd started now.
		datagram := e.alice.Client.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, c.addr, time.Now().Add(4*time.Second))
		checkLine(t, e.send(t, c, datagram), map[string]string{"verdict": "grant", "reason": ""})
		if kill {
			e.daemon.Kill9()
		}
		e.daemon.Restart()
		checkLine(t, e.send(t, c, datagram), map[string]string{"verdict": "deny", "reason": "replay"})
		if l := e.daemon.Lines(); !hasMsg(l, "replay memory loaded") {
			t.Errorf("%s: no \"replay memory loaded\" line after the restart", name)
		}
		_, line := e.knock(t, e.alice, c, netip.Addr{}, packet.TCP, tcpA)
		checkLine(t, line, map[string]string{"verdict": "grant", "reason": ""})
	}
}

func hasMsg(lines []e2e.Line, msg string) bool {
	for _, l := range lines {
		if l.Msg() == msg {
			return true
		}
	}
	return false
}
