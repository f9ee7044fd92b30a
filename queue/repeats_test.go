package queue_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/packet/packettest"
	"sknock/queue"
	"sknock/queue/queuetest"
)

// TestGateRepeatLoop: a packet that comes back to the gate right after it
// was repeated (a rule above the gate's jump stripped the signal bit) is
// answered without another repeat, a grant accepted and a refusal
// dropped, and counted; after RepeatWindow the same bytes are a new packet
// (a retransmission).
func TestGateRepeatLoop(t *testing.T) {
	var now time.Duration
	repeats := queue.NewRepeats(func() time.Duration { return now })
	var d decideByPort
	g, fake := startGate(t, queue.GateConfig{Queue: 101, Decide: d.decide, Repeats: repeats})
	grant := packettest.TCPPacket(client4, 40000, server4, 2000, packet.TCPSyn)
	refuse := packettest.TCPPacket(client4, 40000, server4, 2002, packet.TCPSyn)
	inject(t, fake, queue.Packet{ID: 1, Data: grant})
	inject(t, fake, queue.Packet{ID: 2, Data: refuse})
	now += 300 * time.Microsecond
	inject(t, fake, queue.Packet{ID: 3, Data: grant})
	inject(t, fake, queue.Packet{ID: 4, Data: refuse})
	now += 2 * queue.RepeatWindow
	inject(t, fake, queue.Packet{ID: 5, Data: grant})
	want := []queuetest.Verdict{
		{ID: 1, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
		{ID: 2, Verdict: queue.NFRepeat, Mark: queue.DefaultRejectMark, WithMark: true},
		{ID: 3, Verdict: queue.NFAccept},
		{ID: 4, Verdict: queue.NFDrop},
		{ID: 5, Verdict: queue.NFRepeat, Mark: queue.DefaultAcceptMark, WithMark: true},
	}
	if diff := cmp.Diff(want, fake.Verdicts()); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	st := g.Stats()
	if st.RepeatLoops.Load() != 2 || repeats.Loops() != 2 || st.Accepted.Load() != 3 || st.Rejected.Load() != 1 || st.Dropped.Load() != 1 {
		t.Errorf("loops %d (table %d), accepted %d, rejected %d, dropped %d; want 2 2 3 1 1",
			st.RepeatLoops.Load(), repeats.Loops(), st.Accepted.Load(), st.Rejected.Load(), st.Dropped.Load())
	}
}

func BenchmarkRepeatsAgain(b *testing.B) {
	r := queue.NewRepeats(nil)
	data := packettest.TCPPacket(client4, 40000, server4, 2000, packet.TCPSyn)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		data[len(data)-1] = byte(i)
		r.Again(data)
	}
}
