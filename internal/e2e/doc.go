// Package e2e is the harness for sknock's root-only end-to-end tests: it
// builds the real binaries, makes a server and two client network
// namespaces joined by a bridge, issues certificates, seals knocks, runs
// TCP and UDP services inside namespaces, and starts and stops the real
// sknockd with its log captured.
//
// A typical test:
//
//	testenv.RequireRoot(t)
//	n := e2e.NewNet(t)
//	p := e2e.NewPKI(t)
//	alice := p.Client(t, "alice", "tcp/2000")
//	e2e.ServeTCPEcho(t, n.Server, ":2000")
//	d := e2e.StartDaemon(t, n, p.Config(`
//	knock: {ports: "40000:40100"}
//	gate: {protect: [tcp/2000], policy: reject}
//	`))
//	e2e.SendUDP(n.Client, e2e.AddrPort(e2e.ServerV4, e2e.KnockPort),
//		alice.Seal(t, p.ServerKey, packet.TCP, 2000, e2e.ClientV4))
//	err := e2e.TCPEcho(n.Client, e2e.AddrPort(e2e.ServerV4, 2000), time.Second)
//
// Everything it makes is undone by the test's cleanup, also when the test
// fails: processes are killed, namespaces deleted, files live in
// t.TempDir. Addresses come only from 198.18.0.0/15 and fd00:5e::/64.
package e2e
