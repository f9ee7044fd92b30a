// Package netns builds throwaway network namespaces joined by veth pairs
// for the root-only integration tests. Every namespace it makes is removed
// by the test's cleanup, also when the test fails.
//
// Addresses are only ever taken from 198.18.0.0/15 and fd00:5e::/64, the
// ranges the project's tests may use.
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// NS is one network namespace made for a test.
type NS struct {
	Name string
	t    testing.TB
}

// New makes a namespace whose name starts with prefix and carries a random
// suffix, brings up its loopback, and removes it when t ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	name := fmt.Sprintf("sk%s%s", prefix, hex.EncodeToString(b[:]))
	if len(name) > 15 {
		name = name[:15]
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	ns := &NS{Name: name, t: t}
	t.Cleanup(func() {
		// Kill anything still running inside before deleting.
		if pids, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				exec.Command("kill", "-9", p).Run()
			}
		}
		exec.Command("ip", "netns", "del", name).Run()
	})
	ns.MustRun("ip", "link", "set", "lo", "up")
	return ns
}

// Path is the namespace's file, for setns(2) or a reader's NetNS.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Run runs argv inside the namespace and returns its combined output.
func (n *NS) Run(argv ...string) (string, error) {
	return n.RunContext(context.Background(), argv...)
}

// RunContext is Run with a context that bounds the command.
func (n *NS) RunContext(ctx context.Context, argv ...string) (string, error) {
	cmd := n.Command(ctx, argv...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// MustRun runs argv inside the namespace and fails the test on error.
func (n *NS) MustRun(argv ...string) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := n.RunContext(ctx, argv...)
	if err != nil {
		n.t.Fatalf("in netns %s: %s: %v\n%s", n.Name, strings.Join(argv, " "), err, out)
	}
	return out
}

// Command returns an unstarted command that runs argv inside the namespace.
func (n *NS) Command(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name}, argv...)...)
}

// Link joins a and b with a veth pair and gives each end the addresses in
// addrsA and addrsB (CIDR notation, e.g. "198.18.0.1/24", "fd00:5e::1/64").
// IPv6 duplicate address detection is turned off so addresses work at once.
func Link(t testing.TB, a *NS, addrsA []string, b *NS, addrsB []string) {
	t.Helper()
	ifA, ifB := "veth0", "veth0"
	tmpA, tmpB := a.Name+"a", b.Name+"b"
	if len(tmpA) > 15 {
		tmpA = tmpA[len(tmpA)-15:]
	}
	if len(tmpB) > 15 {
		tmpB = tmpB[len(tmpB)-15:]
	}
	run := func(argv ...string) {
		t.Helper()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
		}
	}
	run("ip", "link", "add", tmpA, "netns", a.Name, "type", "veth", "peer", "name", tmpB, "netns", b.Name)
	a.MustRun("ip", "link", "set", tmpA, "name", ifA)
	b.MustRun("ip", "link", "set", tmpB, "name", ifB)
	for _, side := range []struct {
		ns    *NS
		addrs []string
	}{{a, addrsA}, {b, addrsB}} {
		side.ns.MustRun("sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
		side.ns.MustRun("sysctl", "-qw", "net.ipv6.conf.veth0.accept_dad=0")
		for _, addr := range side.addrs {
			args := []string{"ip", "addr", "add", addr, "dev", ifA}
			if strings.Contains(addr, ":") {
				args = []string{"ip", "-6", "addr", "add", addr, "dev", ifA, "nodad"}
			}
			side.ns.MustRun(args...)
		}
		side.ns.MustRun("ip", "link", "set", ifA, "up")
	}
}
