package knock

import "sknock/packet"

// The wire format numbers the protocols its own way (UDP 0, TCP 1);
// everywhere else they are packet.Proto. These two functions are the only
// place the two meet.
const (
	wireUDP = 0
	wireTCP = 1
)

// WireProto returns how the wire format spells p, and false for a
// protocol it cannot carry.
func WireProto(p packet.Proto) (byte, bool) {
	switch p {
	case packet.TCP:
		return wireTCP, true
	case packet.UDP:
		return wireUDP, true
	}
	return 0, false
}

// ProtoFromWire returns the protocol the wire value b stands for, and
// false when it stands for none.
func ProtoFromWire(b byte) (packet.Proto, bool) {
	switch b {
	case wireTCP:
		return packet.TCP, true
	case wireUDP:
		return packet.UDP, true
	}
	return 0, false
}
