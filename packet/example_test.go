package packet_test

import (
	"fmt"
	"net/netip"

	"sknock/packet"
	"sknock/packet/packettest"
)

func ExampleHeader_Decode() {
	pkt := packettest.TCPPacket(netip.MustParseAddr("198.18.0.2"), 40000, netip.MustParseAddr("198.18.0.1"), 2000, packet.TCPSyn)
	var h packet.Header // reuse one Header for every packet
	h.Decode(pkt)
	fmt.Println(h.Family, h.Proto, h.Src, h.DstPort, h.TCPFlags&packet.TCPSyn != 0)
	// Output: 4 tcp 198.18.0.2 2000 true
}
