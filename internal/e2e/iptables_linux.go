package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"sknock/internal/netns"
)

var saveCounters = regexp.MustCompile(` \[\d+:\d+\]$`)

// IptablesSave returns `iptables-save` followed by `ip6tables-save` in ns,
// without comment lines and packet counters, so two calls can be
// compared. Each part starts with a line "## iptables" or "## ip6tables".
func IptablesSave(t testing.TB, ns *netns.NS) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{"iptables", "ip6tables"} {
		b.WriteString("## " + tool + "\n")
		for _, line := range strings.Split(ns.MustRun(tool+"-save"), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			b.WriteString(saveCounters.ReplaceAllString(line, ""))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// DestUnreachSent returns how many ICMP and ICMPv6 destination-unreachable
// messages (port unreachable among them) ns has sent so far.
func DestUnreachSent(t testing.TB, ns *netns.NS) (v4, v6 uint64) {
	t.Helper()
	return snmpCounter(t, ns.MustRun("cat", "/proc/net/snmp"), "Icmp:", "OutDestUnreachs"),
		snmpCounter(t, ns.MustRun("cat", "/proc/net/snmp6"), "", "Icmp6OutDestUnreachs")
}

// snmpCounter finds a counter in /proc/net/snmp (prefix "Icmp:": a line of
// names followed by a line of values) or /proc/net/snmp6 (prefix "":
// "name value" lines).
func snmpCounter(t testing.TB, text, prefix, name string) uint64 {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		f := strings.Fields(line)
		if prefix == "" {
			if len(f) == 2 && f[0] == name {
				return parseUint(t, f[1])
			}
			continue
		}
		if len(f) == 0 || f[0] != prefix || i+1 >= len(lines) {
			continue
		}
		values := strings.Fields(lines[i+1])
		for j, n := range f {
			if n == name && j < len(values) {
				return parseUint(t, values[j])
			}
		}
	}
	t.Fatalf("no counter %s in:\n%s", name, text)
	return 0
}

func parseUint(t testing.TB, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("counter %q: %v", s, err)
	}
	return n
}
