package queue

import (
	"encoding/binary"
	"errors"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
)

// packetMessage builds an NFQNL_MSG_PACKET message as the kernel sends it.
func packetMessage(t testing.TB, id uint32, mark uint32, payload []byte, capLen uint32) []byte {
	t.Helper()
	be := binary.BigEndian
	hdr := be.AppendUint32(nil, id)
	hdr = append(hdr, 0x08, 0x00, 1) // hw_protocol, hook
	attrs := []netlink.Attribute{{Type: nfqaPacketHdr, Data: hdr}}
	if mark != 0 {
		attrs = append(attrs, netlink.Attribute{Type: nfqaMark, Data: be.AppendUint32(nil, mark)})
	}
	attrs = append(attrs, netlink.Attribute{Type: 5, Data: []byte{0, 0, 0, 2}}) // NFQA_IFINDEX_INDEV
	if capLen != 0 {
		attrs = append(attrs, netlink.Attribute{Type: nfqaCapLen, Data: be.AppendUint32(nil, capLen)})
	}
	attrs = append(attrs, netlink.Attribute{Type: nfqaPayload, Data: payload})
	return message(t, nfqnlMsgPacket, 0, attrs)
}

func message(t testing.TB, typ uint16, seq uint32, attrs []netlink.Attribute) []byte {
	t.Helper()
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	m := netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ), Sequence: seq}, Data: append(nfGenHeader(7), data...)}
	m.Header.Length = uint32(nlHeaderLen + len(m.Data))
	b, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errorMessage(errno syscall.Errno) []byte {
	b := make([]byte, nlHeaderLen+4+nlHeaderLen)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], nlmsgError)
	binary.NativeEndian.PutUint32(b[nlHeaderLen:], uint32(-int32(errno)))
	return b
}

func TestAppendPackets(t *testing.T) {
	tests := []struct {
		name    string
		give    [][]byte
		want    []Packet
		wantErr error
	}{
		{name: "one", give: [][]byte{packetMessage(t, 1, 0, []byte{0x45, 1, 2}, 0)}, want: []Packet{{ID: 1, Data: []byte{0x45, 1, 2}}}},
		{name: "mark and odd lengths", give: [][]byte{packetMessage(t, 2, 0x101, []byte{1}, 0), packetMessage(t, 3, 0, []byte{1, 2, 3, 4, 5}, 0)},
			want: []Packet{{ID: 2, Mark: 0x101, Data: []byte{1}}, {ID: 3, Data: []byte{1, 2, 3, 4, 5}}}},
		{name: "cut by the copy range", give: [][]byte{packetMessage(t, 4, 0, []byte{1, 2}, 1500)}, want: []Packet{{ID: 4, Data: []byte{1, 2}, Truncated: true}}},
		{name: "ack ignored", give: [][]byte{errorMessage(0), packetMessage(t, 5, 0, []byte{9}, 0)}, want: []Packet{{ID: 5, Data: []byte{9}}}},
		{name: "refused verdict reported", give: [][]byte{packetMessage(t, 6, 0, []byte{9}, 0), errorMessage(syscall.ENOENT)},
			want: []Packet{{ID: 6, Data: []byte{9}}}, wantErr: syscall.ENOENT},
		{name: "no id", give: [][]byte{message(t, nfqnlMsgPacket, 0, []netlink.Attribute{{Type: nfqaPayload, Data: []byte{1}}})}, wantErr: ErrNoPacketID},
		{name: "cut short", give: [][]byte{packetMessage(t, 7, 0, []byte{1, 2, 3}, 0)[:30]}, wantErr: ErrMalformed},
		{name: "empty", give: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b []byte
			for _, m := range tt.give {
				b = append(b, m...)
			}
			got, err := appendPackets(nil, b)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("packets (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAppendPacketsAllocs(t *testing.T) {
	var b []byte
	for id := range uint32(MaxBatch) {
		b = append(b, packetMessage(t, id+1, id, make([]byte, 60), 0)...)
	}
	pkts := make([]Packet, 0, MaxBatch)
	if n := testing.AllocsPerRun(100, func() { pkts, _ = appendPackets(pkts[:0], b) }); n != 0 {
		t.Errorf("%v allocations per batch, want 0", n)
	}
	if len(pkts) != MaxBatch {
		t.Errorf("%d packets, want %d", len(pkts), MaxBatch)
	}
}

// TestPutVerdict compares putVerdict with the message netlink's own
// marshalling builds from the same fields.
func TestPutVerdict(t *testing.T) {
	tests := []struct {
		name     string
		verdict  int
		mark     uint32
		withMark bool
		batch    bool
	}{
		{name: "accept", verdict: NFAccept},
		{name: "drop batch", verdict: NFDrop, batch: true},
		{name: "repeat with mark", verdict: NFRepeat, mark: 0x101, withMark: true},
		{name: "repeat batch with mark", verdict: NFRepeat, mark: 1, withMark: true, batch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := binary.BigEndian
			attrs := []netlink.Attribute{{Type: nfqaVerdictHdr, Data: be.AppendUint32(be.AppendUint32(nil, uint32(tt.verdict)), 0xdeadbeef)}}
			if tt.withMark {
				attrs = append(attrs, netlink.Attribute{Type: nfqaMark, Data: be.AppendUint32(nil, tt.mark)})
			}
			typ := uint16(nfqnlMsgVerdict)
			if tt.batch {
				typ = nfqnlMsgVerdictB
			}
			want := message(t, typ, 0, attrs)
			binary.NativeEndian.PutUint16(want[6:], nlmFRequest)
			var buf [verdictMaxLen]byte
			n := putVerdict(buf[:], 7, 0xdeadbeef, tt.verdict, tt.mark, tt.withMark, tt.batch)
			if diff := cmp.Diff(want, buf[:n]); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzAppendPackets(f *testing.F) {
	f.Add(packetMessage(f, 1, 0x1, []byte{0x45, 0, 0, 20}, 0))
	f.Add(append(errorMessage(syscall.ENOENT), packetMessage(f, 2, 0, nil, 40)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, _ := appendPackets(nil, b)
		for _, p := range pkts {
			if len(p.Data) > len(b) {
				t.Fatalf("packet %d: %d bytes of data from a %d-byte buffer", p.ID, len(p.Data), len(b))
			}
		}
	})
}
