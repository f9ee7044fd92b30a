package rules

import (
	"fmt"
	"hash/fnv"
)

// knockLimit returns the match options of the knock rate limit (none when
// KnockRateLimit is empty): a hashlimit per source address, an IPv6 /64
// counting as one source.
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
	return limit
}

// hashlimitName names the knock rate limit's table in the kernel: at most
// 15 characters, and new for every chain, rate and family. The kernel
// keeps the parameters of an existing table of the same name, and during
// an atomic replacement the old rule still holds it, so a changed rate
// under the old name would never take effect.
func (c Config) hashlimitName(ipv6 bool) string {
	h := fnv.New32a()
	h.Write([]byte(c.Chain + "\x00" + c.KnockRateLimit + "\x00" + family(ipv6)))
	return fmt.Sprintf("sknock_%08x", h.Sum32())
}
