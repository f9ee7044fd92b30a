package spoof

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestBuildSYN checks the SYN's header fields and that its TCP checksum
// verifies: the checksum over the segment, pseudo-header and stored
// checksum included, is zero.
func TestBuildSYN(t *testing.T) {
	pkt := make([]byte, 64)
	src, dst := netip.MustParseAddr("198.18.64.7"), netip.MustParseAddr("198.18.0.1")
	n := buildSYN(pkt, src, dst, 40001, 5003, 0xdeadbeef)
	if n != 40 {
		t.Fatalf("length %d, want 40", n)
	}
	if pkt[9] != 6 || binary.BigEndian.Uint16(pkt[2:]) != 40 {
		t.Errorf("IP protocol %d, total length %d; want 6, 40", pkt[9], binary.BigEndian.Uint16(pkt[2:]))
	}
	seg := pkt[20:40]
	if sp, dp := binary.BigEndian.Uint16(seg[0:]), binary.BigEndian.Uint16(seg[2:]); sp != 40001 || dp != 5003 {
		t.Errorf("ports %d→%d, want 40001→5003", sp, dp)
	}
	if seg[13] != 0x02 || seg[12] != 0x50 {
		t.Errorf("flags %#x, data offset byte %#x; want SYN (0x02), 0x50", seg[13], seg[12])
	}
	if c := tcpChecksum(pkt[12:16], pkt[16:20], seg); c != 0 {
		t.Errorf("checksum over the whole segment = %#x, want 0 (the stored checksum is wrong)", c)
	}
}
