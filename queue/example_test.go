package queue_test

import (
	"fmt"
	"net/netip"

	"sknock/queue"
	"sknock/queue/queuetest"
)

func ExampleHeader_Decode() {
	pkt := queuetest.TCPPacket(netip.MustParseAddr("198.18.0.2"), 40000, netip.MustParseAddr("198.18.0.1"), 2000, queue.TCPSyn)
	var h queue.Header // reuse one Header for every packet
	h.Decode(pkt)
	fmt.Println(h.Family, h.Proto, h.Src, h.DstPort, h.TCPFlags&queue.TCPSyn != 0)
	// Output: 4 6 198.18.0.2 2000 true
}

func ExampleNewGate() {
	allowed := netip.MustParseAddr("198.18.0.2")
	gate, err := queue.NewGate(queue.GateConfig{
		Queue:      101,
		RejectMark: 0x1, // the static rules REJECT packets carrying this bit
		Decide: func(h *queue.Header) queue.Verdict {
			if h.Src == allowed {
				return queue.Accept
			}
			return queue.Reject
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = gate // gate.Run(ctx) serves queue 101 until ctx is done
}
