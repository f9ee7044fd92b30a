package packet_test

import (
	"strings"
	"testing"

	"sknock/packet"
)

func TestVerdictString(t *testing.T) {
	for v, want := range map[packet.Verdict]string{packet.Drop: "drop", packet.Accept: "accept", packet.Reject: "reject", packet.Defer: "defer", 42: "verdict(42)"} {
		if got := v.String(); got != want {
			t.Errorf("Verdict(%d).String() = %q, want %q", uint8(v), got, want)
		}
	}
}

func TestProto(t *testing.T) {
	for _, tt := range []struct {
		give  string
		want  packet.Proto
		valid bool
	}{
		{"tcp", packet.TCP, true},
		{"UDP", packet.UDP, true},
		{"icmp", 0, false},
	} {
		got, err := packet.ParseProto(tt.give)
		if got != tt.want || (err == nil) != tt.valid {
			t.Errorf("ParseProto(%q) = %v, %v; want %v (valid %v)", tt.give, got, err, tt.want, tt.valid)
		}
		if tt.valid && (got.String() != strings.ToLower(tt.give) || !got.Valid()) {
			t.Errorf("%v: String %q, Valid %v", got, got.String(), got.Valid())
		}
	}
	if got := packet.Proto(1).String(); got != "proto(1)" {
		t.Errorf("Proto(1).String() = %q", got)
	}
}
