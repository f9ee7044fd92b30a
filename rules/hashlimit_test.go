package rules

import (
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestKnockLimitTableOutlastsFloods: for every rate, the knock rate
// limit's table is sized and expired explicitly (never the iptables
// defaults, which are 65,536 entries held 10 s in some versions: a
// spoofed flood of 6,600 new sources a second fills that and locks new
// clients out), so that it fills only above 200,000 new sources a second,
// and remembers an idle source at least as long as its bucket takes to
// refill, capped at a second.
func TestKnockLimitTableOutlastsFloods(t *testing.T) {
	for _, tc := range []struct {
		rate   string
		expire time.Duration
	}{
		{"20/second", 250 * time.Millisecond},
		{"1/second", time.Second},
		{"100/second", 100 * time.Millisecond},
		{"999999999/second", 100 * time.Millisecond},
		{"3/minute", time.Second},
		{"1/day", time.Second},
	} {
		c := DefaultConfig()
		c.KnockRateLimit = tc.rate
		for _, v6 := range []bool{false, true} {
			opts := c.knockLimit(v6)
			get := func(name string) int {
				i := slices.Index(opts, name)
				if i < 0 || i+1 >= len(opts) {
					t.Fatalf("%s: no %s in %q", tc.rate, name, opts)
				}
				n, err := strconv.Atoi(opts[i+1])
				if err != nil {
					t.Fatalf("%s: %s %q: %v", tc.rate, name, opts[i+1], err)
				}
				return n
			}
			size, max := get("--hashlimit-htable-size"), get("--hashlimit-htable-max")
			expire := time.Duration(get("--hashlimit-htable-expire")) * time.Millisecond
			gc := time.Duration(get("--hashlimit-htable-gcinterval")) * time.Millisecond
			if expire != tc.expire {
				t.Errorf("%s: expire %s, want %s", tc.rate, expire, tc.expire)
			}
			if fills := float64(max) / (expire + gc).Seconds(); fills < 200000 {
				t.Errorf("%s: the table (max %d, expire %s, gc %s) fills at %.0f new sources/s, want ≥ 200000", tc.rate, max, expire, gc, fills)
			}
			if size < 65536 || max > 1<<18 {
				t.Errorf("%s: size %d, max %d: want ≥ 65536 buckets and at most 262144 entries (32 MiB)", tc.rate, size, max)
			}
			if n := c.hashlimitName(v6); len(n) > 15 {
				t.Errorf("%s: table name %q longer than 15", tc.rate, n)
			}
		}
	}
}

// TestHashlimitNameChangesWithTheTable: a table of a new layout gets a new
// name, since the kernel keeps the parameters of a table that exists.
func TestHashlimitNameChangesWithTheTable(t *testing.T) {
	a, b := DefaultConfig(), DefaultConfig()
	a.KnockRateLimit, b.KnockRateLimit = "20/second", "40/second"
	if a.hashlimitName(false) == b.hashlimitName(false) || a.hashlimitName(false) == a.hashlimitName(true) {
		t.Errorf("names %s, %s, %s: want one per rate and family", a.hashlimitName(false), b.hashlimitName(false), a.hashlimitName(true))
	}
	if a.hashlimitName(false) == "sknock_631f3d1b" {
		t.Error("the 20/second table kept the name of the table of default size and expiry; a running kernel would keep the old layout")
	}
}
