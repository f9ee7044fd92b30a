package rules

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"
)

// The knock rate limit's table in the kernel (xt_hashlimit), sized and
// expired so that a flood from spoofed sources cannot fill it. A full
// table drops every packet from a source it does not hold yet ("hotdrop"),
// before the knock queue: new clients would be locked out. A table holds
// about arrival rate of new sources × (expiry + collection interval)
// entries, so with these values it fills only above
// hashlimitMax / (hashlimitMaxExpire + hashlimitGC) = 209,715 new sources
// a second, beyond what reaches the host's knock queue anyway.
const (
	// hashlimitBuckets is the table's hash size (8 bytes a bucket).
	hashlimitBuckets = 65536
	// hashlimitMax bounds its entries (about 128 bytes each: 32 MiB at
	// most, and only while a flood lasts).
	hashlimitMax = 262144
	// hashlimitGC is how often expired entries are collected.
	hashlimitGC = 250 * time.Millisecond
	// hashlimitMinExpire and hashlimitMaxExpire bound how long an idle
	// source is remembered (see hashlimitExpire).
	hashlimitMinExpire = 100 * time.Millisecond
	hashlimitMaxExpire = time.Second
	// hashlimitBurst is iptables' default burst, which the rule keeps.
	hashlimitBurst = 5
)

// knockLimit returns the match options of the knock rate limit (none when
// KnockRateLimit is empty): a hashlimit per source address, an IPv6 /64
// counting as one source, in a table of fixed size and short expiry
// (see the constants above).
func (c Config) knockLimit(ipv6 bool) []string {
	if c.KnockRateLimit == "" {
		return nil
	}
	limit := []string{
		"-m", "hashlimit", "--hashlimit-upto", c.KnockRateLimit,
		"--hashlimit-mode", "srcip", "--hashlimit-name", c.hashlimitName(ipv6),
	}
	if ipv6 {
		// One IPv6 host usually holds a whole /64: count it as one source.
		limit = append(limit, "--hashlimit-srcmask", "64")
	}
	return append(limit, c.hashlimitTable()...)
}

// hashlimitTable returns the options that size and expire the table.
func (c Config) hashlimitTable() []string {
	return []string{
		"--hashlimit-htable-size", strconv.Itoa(hashlimitBuckets),
		"--hashlimit-htable-max", strconv.Itoa(hashlimitMax),
		"--hashlimit-htable-expire", strconv.FormatInt(c.hashlimitExpire().Milliseconds(), 10),
		"--hashlimit-htable-gcinterval", strconv.FormatInt(hashlimitGC.Milliseconds(), 10),
	}
}

// hashlimitExpire is how long the table remembers an idle source: the
// time its bucket takes to refill (burst / rate; a source that comes back
// later would find it full anyway, so forgetting it loses nothing), within
// [hashlimitMinExpire, hashlimitMaxExpire]. Capped, so that slow rates
// ("3/minute") cannot make the table hold sources for minutes and a flood
// fill it: at such rates an idle source may send a burst of 5 once a
// second or so, and is held to the rate while it keeps sending.
func (c Config) hashlimitExpire() time.Duration {
	n, unit, _ := strings.Cut(c.KnockRateLimit, "/")
	count, err := strconv.ParseUint(n, 10, 32)
	per := map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[unit]
	if err != nil || count == 0 || per == 0 {
		return hashlimitMaxExpire // Validate refuses such a rate
	}
	refill := per * hashlimitBurst / time.Duration(count)
	return min(max(refill, hashlimitMinExpire), hashlimitMaxExpire)
}

// hashlimitName names the knock rate limit's table in the kernel: at most
// 15 characters, and new for every chain, rate, family and table layout.
// The kernel keeps the parameters of an existing table of the same name,
// and during an atomic replacement the old rule still holds it, so a
// changed rate under the old name would never take effect.
func (c Config) hashlimitName(ipv6 bool) string {
	h := fnv.New32a()
	h.Write([]byte(c.Chain + "\x00" + c.KnockRateLimit + "\x00" + family(ipv6) + "\x00" + strings.Join(c.hashlimitTable(), " ")))
	return fmt.Sprintf("sknock_%08x", h.Sum32())
}
