package capture

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"
)

// The files in testdata are captures, in a network namespace of their
// own, of two datagrams on lo: "knock-v4-payload" from 127.0.0.1 to port
// 23456, then "knock-v6-payload" from ::1 to port 34567. tcpdump 4.99
// wrote the pcap files (it writes no pcapng): lo.pcap: -i lo (Ethernet);
// any.pcap: -i any (Linux cooked v2); nano.pcap: -i lo
// --time-stamp-precision=nano. Wireshark 4.0's dumpcap (tshark's
// capture engine) wrote lo.pcapng: dumpcap -i lo -f udp -c 2, with its
// section header's options and an interface statistics block at the end.
func TestReadTcpdumpCaptures(t *testing.T) {
	for _, name := range []string{"lo.pcap", "any.pcap", "nano.pcap", "lo.pcapng"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile("testdata/" + name)
			if err != nil {
				t.Fatal(err)
			}
			if !Is(data) {
				t.Fatal("Is = false")
			}
			got, st, err := Read(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 2 || st.Frames != 2 {
				t.Fatalf("%d datagrams of %d frames, want 2 of 2: %+v", len(got), st.Frames, got)
			}
			want := []struct {
				src, dst netip.Addr
				port     uint16
				payload  string
			}{
				{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), 23456, "knock-v4-payload"},
				{netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), 34567, "knock-v6-payload"},
			}
			for i, w := range want {
				d := got[i]
				if d.Src.Addr() != w.src || d.Dst != netip.AddrPortFrom(w.dst, w.port) || string(d.Payload) != w.payload || d.Frame != i+1 || d.Truncated {
					t.Errorf("datagram %d = %+v, want %v -> %v:%d %q", i, d, w.src, w.dst, w.port, w.payload)
				}
				if d.Time.Year() != 2026 {
					t.Errorf("datagram %d captured at %v, want December 2026", i, d.Time)
				}
			}
			if !got[1].Time.After(got[0].Time) {
				t.Errorf("times %v then %v, want increasing", got[0].Time, got[1].Time)
			}
		})
	}
}

// ipv4UDP builds an IPv4 packet carrying a UDP datagram.
func ipv4UDP(src, dst string, sport, dport uint16, payload []byte, flags uint16) []byte {
	udp := udpHeader(sport, dport, payload)
	ip := make([]byte, 20, 20+len(udp))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	binary.BigEndian.PutUint16(ip[6:], flags)
	ip[8], ip[9] = 64, 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	return append(ip, udp...)
}

// ipv6UDP builds an IPv6 packet with a hop-by-hop header, then UDP.
func ipv6UDP(src, dst string, sport, dport uint16, payload []byte) []byte {
	udp := udpHeader(sport, dport, payload)
	ip := make([]byte, 48, 48+len(udp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(8+len(udp)))
	ip[6], ip[7] = 0, 64 // next: hop-by-hop
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	ip[40], ip[41] = 17, 0 // hop-by-hop: next UDP, 8 bytes
	return append(ip, udp...)
}

func udpHeader(sport, dport uint16, payload []byte) []byte {
	h := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(h, sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint16(h[4:], uint16(8+len(payload)))
	return append(h, payload...)
}

func ethernet(etherType uint16, vlan bool, ip []byte) []byte {
	f := make([]byte, 12)
	if vlan {
		f = binary.BigEndian.AppendUint16(f, 0x8100)
		f = binary.BigEndian.AppendUint16(f, 7)
	}
	f = binary.BigEndian.AppendUint16(f, etherType)
	return append(f, ip...)
}

// pcapFile writes frames as a big-endian nanosecond pcap of link type.
func pcapFile(link uint32, at time.Time, frames ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, pcapNanoBE)
	b = binary.BigEndian.AppendUint16(b, 2)
	b = binary.BigEndian.AppendUint16(b, 4)
	b = append(b, make([]byte, 12)...)
	b = binary.BigEndian.AppendUint32(b, link)
	for i, f := range frames {
		ts := at.Add(time.Duration(i) * time.Second)
		b = binary.BigEndian.AppendUint32(b, uint32(ts.Unix()))
		b = binary.BigEndian.AppendUint32(b, uint32(ts.Nanosecond()))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// pcapngFile writes frames as little-endian pcapng enhanced packet
// blocks on one interface of link type with millisecond timestamps.
func pcapngFile(link uint16, at time.Time, frames ...[]byte) []byte {
	le := binary.LittleEndian
	block := func(b []byte, typ uint32, body []byte) []byte {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		b = le.AppendUint32(b, typ)
		b = le.AppendUint32(b, uint32(12+len(body)))
		b = append(b, body...)
		return le.AppendUint32(b, uint32(12+len(body)))
	}
	shb := le.AppendUint32(nil, 0x1a2b3c4d)
	shb = le.AppendUint16(shb, 1)
	shb = le.AppendUint16(shb, 0)
	shb = le.AppendUint64(shb, ^uint64(0))
	b := block(nil, pcapngSHB, shb)
	idb := le.AppendUint16(nil, link)
	idb = le.AppendUint16(idb, 0)
	idb = le.AppendUint32(idb, 0)
	idb = le.AppendUint16(idb, 9) // if_tsresol: 10^-3
	idb = le.AppendUint16(idb, 1)
	idb = append(idb, 3, 0, 0, 0)
	idb = le.AppendUint32(idb, 0) // opt_endofopt
	b = block(b, blockIDB, idb)
	for i, f := range frames {
		ms := uint64(at.Add(time.Duration(i) * time.Second).UnixMilli())
		epb := le.AppendUint32(nil, 0)
		epb = le.AppendUint32(epb, uint32(ms>>32))
		epb = le.AppendUint32(epb, uint32(ms))
		epb = le.AppendUint32(epb, uint32(len(f)))
		epb = le.AppendUint32(epb, uint32(len(f)))
		b = block(b, blockEPB, append(epb, f...))
	}
	return b
}

func TestReadSynthetic(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	knock := []byte("a knock")
	v4 := ipv4UDP("198.18.0.2", "198.18.0.1", 40000, 23456, knock, 0)
	v6 := ipv6UDP("fd00:5e::2", "fd00:5e::1", 40001, 34567, knock)
	fragment := ipv4UDP("198.18.0.2", "198.18.0.1", 40000, 23456, knock, 0x2000)
	tcp := append([]byte(nil), v4...)
	tcp[9] = 6
	arp := make([]byte, 28)
	tests := []struct {
		name     string
		give     []byte
		wantSrc  []string
		wantStat Stats
	}{
		{name: "pcap ethernet vlan", give: pcapFile(linkEthernet, at, ethernet(0x0800, true, v4), ethernet(0x86dd, false, v6), ethernet(0x0806, false, arp)),
			wantSrc: []string{"198.18.0.2:40000", "[fd00:5e::2]:40001"}, wantStat: Stats{Frames: 3, NotUDP: 1}},
		{name: "pcap raw", give: pcapFile(linkRaw, at, v4, fragment, tcp),
			wantSrc: []string{"198.18.0.2:40000"}, wantStat: Stats{Frames: 3, NotUDP: 1, Fragments: 1}},
		{name: "pcapng ethernet", give: pcapngFile(linkEthernet, at, ethernet(0x86dd, false, v6), ethernet(0x0800, false, v4)),
			wantSrc: []string{"[fd00:5e::2]:40001", "198.18.0.2:40000"}, wantStat: Stats{Frames: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st, err := Read(tt.give)
			if err != nil {
				t.Fatal(err)
			}
			if st != tt.wantStat {
				t.Errorf("stats %+v, want %+v", st, tt.wantStat)
			}
			if len(got) != len(tt.wantSrc) {
				t.Fatalf("%d datagrams, want %d", len(got), len(tt.wantSrc))
			}
			for i, d := range got {
				if d.Src.String() != tt.wantSrc[i] || string(d.Payload) != "a knock" {
					t.Errorf("datagram %d: %v %q, want %s", i, d.Src, d.Payload, tt.wantSrc[i])
				}
				if i == 0 && !d.Time.Equal(at.Truncate(time.Millisecond)) {
					t.Errorf("time %v, want %v", d.Time, at)
				}
			}
		})
	}
}

func TestReadRefuses(t *testing.T) {
	good := pcapFile(linkRaw, time.Unix(1, 0), ipv4UDP("198.18.0.2", "198.18.0.1", 1, 2, []byte("x"), 0))
	for name, give := range map[string][]byte{
		"raw payload":   []byte("sKnock payload, not a capture"),
		"short header":  good[:20],
		"cut record":    good[:len(good)-3],
		"pcapng broken": pcapngFile(linkEthernet, time.Unix(1, 0))[:30],
	} {
		if _, _, err := Read(give); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: error %v, want ErrFormat", name, err)
		}
	}
}

func FuzzRead(f *testing.F) {
	at := time.Unix(1_900_000_000, 0)
	v4 := ipv4UDP("198.18.0.2", "198.18.0.1", 40000, 23456, []byte("k"), 0)
	f.Add(pcapFile(linkEthernet, at, ethernet(0x0800, true, v4)))
	f.Add(pcapngFile(linkRaw, at, ipv6UDP("fd00:5e::2", "fd00:5e::1", 1, 2, []byte("k"))))
	for _, name := range []string{"lo.pcap", "any.pcap"} {
		if data, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, st, _ := Read(data)
		if len(got) > st.Frames {
			t.Fatalf("%d datagrams from %d frames", len(got), st.Frames)
		}
	})
}
