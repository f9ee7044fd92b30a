//go:build linux

package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"sknock/internal/bench/spoof"
	"sknock/internal/e2e"
	"sknock/packet"
)

// Spoofed-source floods (issue 12, item 2). Mallory sends knock-sized UDP
// datagrams to the knock ports from random sources in 198.18.64.0/18,
// 198.18.128.0/17 and 198.19.0.0/16 (about 114,000 addresses, more than
// the 65,536 entries of a hashlimit table of the kernel's default size)
// at floodRate, while fresh clients, each from an address that has never
// knocked, send a single knock sealed just before it is sent. Every fresh
// client must get its grant.
const (
	floodRate    = 40000 // datagrams per second
	floodFor     = 12 * time.Second
	floodWarmup  = 6 * time.Second // before the first fresh client
	freshClients = 12
	freshGap     = 300 * time.Millisecond
	freshWait    = 3 * time.Second // for a fresh client's grant line
)

var floodSources = []netip.Prefix{
	netip.MustParsePrefix("198.18.64.0/18"),
	netip.MustParsePrefix("198.18.128.0/17"),
	netip.MustParsePrefix("198.19.0.0/16"),
}

// TestIntegrationSpoofedFloodRandom: random bytes from random sources are
// refused cheaply, but each new source takes a slot in the knock rate
// limit's hashlimit table; a table a flood can fill locks new sources out
// in the kernel, before sknockd sees them. The kernel must hold the
// table sknockd sized (with the iptables defaults it holds 65,536 sources,
// for 10 s with some iptables versions: 6,600 new sources a second fill
// it), and fresh clients must get in under the flood.
func TestIntegrationSpoofedFloodRandom(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := e.net.Server.Run(save)
		if err != nil {
			t.Fatalf("%s: %v", save, err)
		}
		if m := knockLimitTable.FindString(out); m == "" {
			t.Errorf("%s: no knock rate limit with a table of 262,144 sources collected every 250 ms and expired within 250 ms:\n%s", save, out)
		}
	}
	payloads := spoof.RandomPayloads(256, 700, 1)
	e.floodWithFreshClients(t, payloads)
}

// knockLimitTable matches the knock rule's hashlimit as iptables-save
// spells it, for the shipped 20/second.
var knockLimitTable = regexp.MustCompile(`--hashlimit-upto 20/sec .*--hashlimit-htable-max 262144 --hashlimit-htable-gcinterval 250 --hashlimit-htable-expire 250 `)

// TestIntegrationSpoofedFloodReplay: one well-formed knock (alice's, naming
// an address it is never sent from) replayed from random sources forces,
// without an outcome cache, the ECDH, the decryption and the certificate
// and signature checks for every copy before it is refused as a source
// mismatch; the workers fall behind and shed fresh clients' knocks.
func TestIntegrationSpoofedFloodReplay(t *testing.T) {
	requireTools(t)
	e := newEnv(t, "drop", time.Minute)
	captured := e.alice.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, e2e.MalloryV4)
	e.floodWithFreshClients(t, [][]byte{captured})
	// The copies were refused, not granted.
	for _, l := range e.daemon.Lines() {
		if l.Msg() == "knock" && l.String("verdict") == "grant" && !strings.HasPrefix(l.String("source"), "198.18.0.") {
			t.Errorf("a replayed copy was granted: %v", l)
		}
	}
}

// floodWithFreshClients runs the flood of payloads from mallory and the
// fresh clients' knocks from the client namespace, and fails t unless
// every fresh client was granted.
func (e *env) floodWithFreshClients(t *testing.T, payloads [][]byte) {
	t.Helper()
	// Spoofed sources have no route back: loose reverse-path checks.
	e.net.Server.MustRun("sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.br0.rp_filter=0")
	fresh := make([]netip.Addr, freshClients)
	for i := range fresh {
		fresh[i] = netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)})
		e.net.Client.MustRun("ip", "addr", "add", fresh[i].String()+"/32", "dev", "veth0")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type floodResult struct {
		res spoof.Result
		err error
	}
	done := make(chan floodResult, 1)
	go func() {
		var r floodResult
		r.err = e.net.Mallory.Do(func() error {
			var err error
			r.res, err = spoof.Flood(ctx, spoof.Config{
				Dst: e2e.ServerV4, FirstPort: 40000, LastPort: 40100,
				Sources: floodSources, Payloads: payloads,
				Rate: floodRate, N: int(floodRate * floodFor.Seconds()), For: floodFor, Seed: 12,
			})
			return err
		})
		done <- r
	}()

	time.Sleep(floodWarmup)
	t.Logf("knock rate limit table before the first fresh client: %s", hashlimitEntries(e))
	from := len(e.daemon.Lines())
	for i, src := range fresh {
		if i > 0 {
			time.Sleep(freshGap)
		}
		datagram := e.alice.Seal(t, e.pki.ServerKey, packet.TCP, tcpA, src)
		if err := sendFrom(e, src, datagram); err != nil {
			t.Fatalf("fresh client %s: %v", src, err)
		}
	}
	granted := map[string]bool{}
	deadline := time.Now().Add(freshWait)
	for len(granted) < len(fresh) && time.Now().Before(deadline) {
		for _, l := range e.daemon.Lines()[from:] {
			if l.Msg() == "knock" && l.String("verdict") == "grant" {
				granted[l.String("source")] = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatalf("flood: %v", r.err)
	}
	t.Logf("flood: %d datagrams in %s (%.0f/s, %d send errors)", r.res.Sent, r.res.Elapsed.Round(time.Millisecond), r.res.Rate(), r.res.Errors)
	var missing []string
	for _, a := range fresh {
		if !granted[a.String()] {
			missing = append(missing, a.String())
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d fresh clients got in under the flood; no grant for %v", len(fresh)-len(missing), len(fresh), missing)
	}
	if r.res.Sent < floodRate {
		t.Errorf("the flood sent only %d datagrams; it proves nothing", r.res.Sent)
	}
}

// sendFrom sends one datagram from src (an address of the client
// namespace) to a knock port.
func sendFrom(e *env, src netip.Addr, datagram []byte) error {
	return e.net.Client.Do(func() error {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.WriteToUDPAddrPort(datagram, netip.AddrPortFrom(e2e.ServerV4, e2e.KnockPort))
		if err != nil {
			return fmt.Errorf("send from %s: %w", src, err)
		}
		return nil
	})
}

// hashlimitEntries says how many entries each knock rate limit table of
// the server holds (/proc/net/ipt_hashlimit, one line an entry).
func hashlimitEntries(e *env) string {
	out, err := e.net.Server.Run("sh", "-c", "for f in /proc/net/ipt_hashlimit/*; do echo \"$(basename $f) $(wc -l < $f)\"; done")
	if err != nil {
		return fmt.Sprintf("unreadable (%v)", err)
	}
	return strings.Join(strings.Fields(out), " ")
}
