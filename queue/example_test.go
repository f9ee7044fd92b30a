package queue_test

import (
	"fmt"
	"net/netip"

	"sknock/packet"
	"sknock/queue"
)

func ExampleNewGate() {
	allowed := netip.MustParseAddr("198.18.0.2")
	gate, err := queue.NewGate(queue.GateConfig{
		Queue:      101,
		RejectMark: 0x1, // the static rules REJECT packets carrying this bit
		Decide: func(h *packet.Header) packet.Verdict {
			if h.Src == allowed {
				return packet.Accept
			}
			return packet.Reject
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = gate // gate.Run(ctx) serves queue 101 until ctx is done
}
