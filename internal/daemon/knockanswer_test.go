package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

// knockVerdict injects a knock-sized datagram from src into knock queue
// 100 and returns the verdict it got.
func knockVerdict(t *testing.T, f *fakeOS, src string) queuetest.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pkt := packettest.UDPPacket(netip.MustParseAddr(src), 40001, netip.MustParseAddr("198.18.0.1"), 23456, make([]byte, 400))
	id, err := f.knockSock.Inject(ctx, pkt)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := f.knockSock.Settled(id)
	if !ok {
		t.Fatalf("no verdict for knock packet %d", id)
	}
	return v
}

// TestDaemonKnockAnswerFollowsPolicy: knocks are answered as the rules
// answer the knock ports' other datagrams, from the start and after a
// reload that changes the policy: under reject repeated with the reject
// mark (which the gate returns and the filter chain REJECTs as a closed
// port, as the rules do with the knock ports' other datagrams), under
// drop dropped.
func TestDaemonKnockAnswerFollowsPolicy(t *testing.T) {
	dir, cfg := daemonPKI(t) // policy reject
	f := newFakeOS()
	d := runDaemon(t, &cfg, f)
	path := filepath.Join(dir, "config.yaml")
	knockPorts := fmt.Sprintf("--dport %d:%d -j ", cfg.Rules.KnockFirst, cfg.Rules.KnockLast)

	steps := []struct {
		policy     string
		wantReject bool
	}{{"reject", true}, {"drop", false}, {"reject", true}}
	for i, step := range steps {
		if i > 0 {
			rewriteConfig(t, path, "policy: "+steps[i-1].policy, "policy: "+step.policy)
			d.hup <- os.Interrupt // any value: the channel stands for SIGHUP
			if err := d.reloads.next(t, "reload"); err != nil {
				t.Fatalf("reload to %s refused: %v", step.policy, err)
			}
		}
		v := knockVerdict(t, f, "198.18.0.3")
		if step.wantReject {
			if v.Verdict != queue.NFRepeat || !v.WithMark || v.Mark&cfg.Rules.Mark == 0 {
				t.Errorf("policy %s: knock got %+v, want a repeat with the reject mark", step.policy, v)
			}
			mark := fmt.Sprintf("MARK --set-xmark %#x/%#x", cfg.Rules.Mark, cfg.Rules.Mark)
			if !chainHas(f, knockPorts+mark) || !chainHas(f, knockPorts+"RETURN") {
				t.Errorf("policy %s: the knock ports' other datagrams are not marked and returned for rejection", step.policy)
			}
			if !tableHas(f, "filter", fmt.Sprintf("-p udp -m mark --mark %#x/%#x -j REJECT --reject-with icmp", cfg.Rules.Mark, cfg.Rules.Mark)) {
				t.Errorf("policy %s: no filter rule rejecting marked datagrams", step.policy)
			}
			if chainHas(f, knockPorts+"DROP") {
				t.Errorf("policy %s: the knock ports' other datagrams are dropped", step.policy)
			}
			continue
		}
		if v.Verdict != queue.NFDrop {
			t.Errorf("policy %s: knock got %+v, want a drop", step.policy, v)
		}
		if !chainHas(f, knockPorts+"DROP") || chainHas(f, knockPorts+"MARK") {
			t.Errorf("policy %s: no DROP rule (or a MARK rule) for the knock ports' other datagrams", step.policy)
		}
	}
}
