package client

import (
	"testing"
	"time"
)

func TestProbeGap(t *testing.T) {
	tests := []struct {
		name string
		give int
		want time.Duration
	}{
		{name: "after the first probe", give: 0, want: 2 * time.Millisecond},
		{name: "doubles", give: 1, want: 4 * time.Millisecond},
		{name: "doubles again", give: 4, want: 32 * time.Millisecond},
		{name: "capped", give: 7, want: maxProbeGap},
		{name: "stays capped", give: 1000, want: maxProbeGap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := probeGap(tt.give); got != tt.want {
				t.Errorf("probeGap(%d) = %s, want %s", tt.give, got, tt.want)
			}
		})
	}
	// Within the default timeout the probes stay few.
	var n int
	for at := time.Duration(0); at < DefaultTimeout; at += probeGap(n) {
		n++
	}
	if n > 12 {
		t.Errorf("%d probes within %s, want at most 12", n, DefaultTimeout)
	}
}
