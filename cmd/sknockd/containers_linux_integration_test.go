//go:build linux

package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"sknock/internal/e2e"
	"sknock/internal/netns"
	"sknock/packet"
)

// The containers of TestIntegrationContainers: namespaces on a bridge
// (ctr0) of the server namespace, published the way Docker, Podman and
// libvirt publish ports: DNAT in nat PREROUTING to a private bridge.
const (
	ctrBridge  = "ctr0"
	ctrNet     = "198.19.0.0/24"
	ctrGateway = "198.19.0.1"
	ctrA       = "198.19.0.2" // -p 2000:2000
	ctrB       = "198.19.0.3" // -p 2001:80
	pubA       = 2000         // published from ctrA's 2000
	pubB       = 2001         // published from ctrB's 80
	outPort    = 2000         // what the containers connect to outside
)

// containerSections protects both published ports.
const containerSections = `knock:
  ports: "40000:40100"
  queue: 100
gate:
  queue: 101
  protect: [tcp/2000, tcp/2001, udp/8000]
  always_allow: [tcp/22]
  policy: %s
  open_duration: %s
`

// dockerRules is what Docker's daemon sets up for two published ports, in
// its own chains, spelled for iptables-restore --noflush: FORWARD's policy
// DROP, DOCKER-USER first, the published ports accepted in DOCKER.
var dockerRules = fmt.Sprintf(`*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s %[1]s ! -o %[2]s -j MASQUERADE
-A DOCKER -i %[2]s -j RETURN
-A DOCKER ! -i %[2]s -p tcp -m tcp --dport 2000 -j DNAT --to-destination %[3]s:2000
-A DOCKER ! -i %[2]s -p tcp -m tcp --dport 2001 -j DNAT --to-destination %[4]s:80
COMMIT
*filter
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-P FORWARD DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -o %[2]s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o %[2]s -j DOCKER
-A FORWARD -i %[2]s ! -o %[2]s -j ACCEPT
-A FORWARD -i %[2]s -o %[2]s -j ACCEPT
-A DOCKER -d %[3]s/32 ! -i %[2]s -o %[2]s -p tcp -m tcp --dport 2000 -j ACCEPT
-A DOCKER -d %[4]s/32 ! -i %[2]s -o %[2]s -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
`, ctrNet, ctrBridge, ctrA, ctrB)

// libvirtRules publishes the same ports with plain DNAT and an accepting
// FORWARD, as libvirt's port forwards and hand-made setups do.
var libvirtRules = fmt.Sprintf(`*nat
-A PREROUTING -d %[4]s/32 -p tcp -m tcp --dport 2000 -j DNAT --to-destination %[2]s:2000
-A PREROUTING -d %[4]s/32 -p tcp -m tcp --dport 2001 -j DNAT --to-destination %[3]s:80
-A POSTROUTING -s %[1]s ! -d %[1]s -j MASQUERADE
COMMIT
`, ctrNet, ctrA, ctrB, e2e.ServerV4)

// addContainers makes two container namespaces behind the server's ctr0
// bridge, starts their services (echo on ctrA:2000 and ctrB:80), and
// installs the publishing rules. It returns ctrA's namespace.
func addContainers(t *testing.T, e *env, publish string) *netns.NS {
	t.Helper()
	s := e.net.Server
	s.MustRun("sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The test's clients reach the server through a bridge (br0) that
	// stands in for the host's network card. With bridge netfilter on,
	// the kernel sends a REJECT's reset for a packet that came over a
	// bridge straight out of the bridge port, before NAT, so a client
	// would see the reset from the container's address, not the one it
	// connected to. A real host's clients come in through its card.
	s.MustRun("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", "net.bridge.bridge-nf-call-ip6tables=0")
	s.MustRun("ip", "link", "add", ctrBridge, "type", "bridge", "forward_delay", "0", "stp_state", "0")
	s.MustRun("ip", "addr", "add", ctrGateway+"/24", "dev", ctrBridge)
	s.MustRun("ip", "link", "set", ctrBridge, "up")
	var first *netns.NS
	for i, addr := range []string{ctrA, ctrB} {
		ctr := netns.New(t, "ctr")
		port := fmt.Sprintf("vctr%d", i)
		s.MustRun("ip", "link", "add", port, "type", "veth", "peer", "name", "veth0", "netns", ctr.Name)
		s.MustRun("ip", "link", "set", port, "master", ctrBridge, "up")
		ctr.MustRun("ip", "addr", "add", addr+"/24", "dev", "veth0")
		ctr.MustRun("ip", "link", "set", "veth0", "up")
		ctr.MustRun("ip", "route", "add", "default", "via", ctrGateway)
		listen := ":2000"
		if addr == ctrB {
			listen = ":80"
		}
		e2e.ServeTCPEcho(t, ctr, listen)
		if first == nil {
			first = ctr
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, _ := s.Run("bridge", "link", "show")
		if strings.Count(out, "state forwarding") >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container bridge ports not forwarding:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Run("sh", "-c", "iptables-restore --noflush <<'EOF'\n"+publish+"EOF\n"); err != nil {
		t.Fatalf("publish the containers' ports: %v", err)
	}
	return first
}

// TestIntegrationContainers: ports published from containers (DNAT to a
// local bridge, forwarded, never passing INPUT) are hidden like the
// host's own, by the port the client addressed: closed before a knock,
// reachable after one from the knocking source only, closed again when
// the grant ends. Under Docker's rules (FORWARD policy DROP, DOCKER-USER
// first, and a DOCKER-USER jump re-inserted above sknock's as a Docker
// restart does) and under libvirt-like plain DNAT. The containers' own
// outbound connections, to a port the host protects, are unaffected.
func TestIntegrationContainers(t *testing.T) {
	requireTools(t)
	for _, tt := range []struct {
		name, policy, publish string
	}{
		{"docker reject", "reject", dockerRules},
		{"libvirt drop", "drop", libvirtRules},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const open = 4 * time.Second
			e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: tt.policy}
			e.alice = e.pki.Client(t, "alice", "tcp/2000,tcp/2001")
			// Outside, a service on the port the host protects, for the
			// containers' outbound connections.
			e2e.ServeTCPEcho(t, e.net.Mallory, fmt.Sprintf(":%d", outPort))
			ctr := addContainers(t, e, tt.publish)
			e.daemon = e2e.StartDaemon(t, e.net, e.pki.Config(fmt.Sprintf(containerSections, tt.policy, open)))
			alice, mallory := e.client(false), e.mallory(false)

			if tt.publish == dockerRules {
				// A Docker restart puts its jump above everything in
				// FORWARD; sknock puts its own back on top.
				from := len(e.daemon.Lines())
				e.net.Server.MustRun("iptables", "-D", "FORWARD", "-j", "DOCKER-USER")
				e.net.Server.MustRun("iptables", "-I", "FORWARD", "1", "-j", "DOCKER-USER")
				l := e.waitLine(t, from, 5*time.Second, "rules restored", func(l e2e.Line) bool { return l.Msg() == msgRestored })
				if !strings.Contains(l.String("problem"), "FORWARD") {
					t.Errorf("rules restored line names %q, want FORWARD", l.String("problem"))
				}
			}

			for _, port := range []uint16{pubA, pubB} {
				e.wantClosed(t, alice, packet.TCP, port)
				e.wantClosed(t, mallory, packet.TCP, port)
			}
			for _, port := range []uint16{pubA, pubB} {
				_, line := e.knock(t, e.alice, alice, netip.Addr{}, packet.TCP, port)
				checkLine(t, line, map[string]string{"verdict": "grant"})
			}
			granted := time.Now()
			for _, port := range []uint16{pubA, pubB} {
				e.wantOpen(t, alice, packet.TCP, port)
				e.wantClosed(t, mallory, packet.TCP, port)
			}

			// The containers' own outbound connection: to mallory's
			// tcp/2000 (a port the host protects), masqueraded; the
			// replies come back to the host's address.
			if err := e2e.TCPEcho(ctr, e2e.AddrPort(e2e.MalloryV4, outPort), probeTimeout); err != nil {
				t.Errorf("container -> %s:%d: %v, want the echo (containers' outbound traffic is never gated)", e2e.MalloryV4, outPort, err)
			}

			if wait := time.Until(granted.Add(open + time.Second)); wait > 0 {
				time.Sleep(wait)
			}
			for _, port := range []uint16{pubA, pubB} {
				e.wantClosed(t, alice, packet.TCP, port)
			}
			if t.Failed() {
				t.Logf("server rules:\n%s", e2e.IptablesSave(t, e.net.Server))
			}
		})
	}
}

// TestIntegrationContainersBackstop: a packet the gate labelled for
// rejection that another tool's accept, put above sknock's FORWARD jump,
// lets through filter is dropped by the backstop in mangle POSTROUTING,
// never delivered to the container; without the backstop it would be.
// The daemon's marking is stood in for by a MARK rule in front of the
// gate, so the kernel's part is tested alone (with --apply-rules).
func TestIntegrationContainersBackstop(t *testing.T) {
	requireTools(t)
	e := &env{net: e2e.NewNet(t), pki: e2e.NewPKI(t), policy: "reject"}
	addContainers(t, e, dockerRules)
	path := t.TempDir() + "/sknockd.yaml"
	writeIntegrationFile(t, path, e.pki.Config(fmt.Sprintf(containerSections, "reject", "15s")))
	if out, code := e2e.RunSknockd(t, e.net.Server, 20*time.Second, "--config", path, "--apply-rules"); code != 0 {
		t.Fatalf("sknockd --apply-rules: exit %d\n%s", code, out)
	}
	s := e.net.Server
	// What sknockd does to a refused SYN (repeat it with the reject
	// signal bit, which the gate turns into the reject label), and what a
	// Docker restart does (its accept above ours).
	s.MustRun("iptables", "-t", "mangle", "-I", "PREROUTING", "1", "-p", "tcp", "--syn", "--dport", fmt.Sprint(pubA), "-j", "MARK", "--set-xmark", "0x40000000/0x40000000")
	s.MustRun("iptables", "-I", "FORWARD", "1", "-j", "ACCEPT")
	alice := e.client(false)
	if err := probe(alice, packet.TCP, pubA, dropTimeout); !e2e.IsTimeout(err) {
		t.Errorf("marked SYN past an accept above the FORWARD jump: %v, want a timeout (dropped by the backstop)", err)
	}
	backstop := strings.TrimPrefix(strings.SplitN(s.MustRun("sh", "-c", "iptables -t mangle -S POSTROUTING | grep -e '-j DROP'"), "\n", 2)[0], "-A POSTROUTING ")
	s.MustRun("sh", "-c", "iptables -t mangle -D POSTROUTING "+backstop)
	if err := probe(alice, packet.TCP, pubA, probeTimeout); err != nil {
		t.Errorf("without the backstop: %v, want the echo (the test stands for nothing if the packet was stopped elsewhere)", err)
	}
}
