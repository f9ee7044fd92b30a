// Command sknockbench is the load and measurement tool of
// scripts/bench.sh. Each subcommand does one bounded job inside whatever
// network namespace it is started in and prints key=value lines for the
// script. It sends only to the address it is given (the script gives it
// 198.18.0.0/15 addresses in namespaces it made), and every loop is
// bounded in count and time.
//
//	sknockbench seal-send  send many pre-sealed valid knocks (throughput)
//	sknockbench latency    knock-to-open latency with a connect prober
//	sknockbench connect    connect latency to an open (granted) port
//	sknockbench garbage    a flood of well-formed garbage knocks
//	sknockbench spoof      a knock flood from random spoofed sources
//	sknockbench listen     TCP listeners on a port range
//	sknockbench qrate      gate queue verdict rate from the kernel's counters
//	sknockbench logstats   grants and decide_us from sknockd's log
//	sknockbench grants     RSS of a grant table with N live grants
//	sknockbench crl        write an N-serial CRL signed by a CA directory
//	sknockbench rusage     wall time and peak RSS of a command
package main

import (
	"fmt"
	"os"
	"sort"
	"time"
)

var commands = map[string]func(args []string) error{
	"seal-send": sealSend,
	"latency":   latency,
	"connect":   connectLatency,
	"garbage":   garbage,
	"spoof":     spoofFlood,
	"listen":    listen,
	"qrate":     queueRate,
	"logstats":  logStats,
	"grants":    grantsRSS,
	"crl":       writeBigCRL,
	"rusage":    rusage,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: sknockbench seal-send|latency|connect|garbage|spoof|listen|qrate|logstats|grants|crl|rusage [flags]")
		os.Exit(2)
	}
	if err := commands[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "sknockbench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// kv prints one key=value line for the script.
func kv(key string, format string, args ...any) {
	fmt.Printf("%s=%s\n", key, fmt.Sprintf(format, args...))
}

// percentile returns the p-th percentile (0..100) of sorted durations,
// nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// printLatencies prints prefix_n, _p50_ms, _p99_ms, _max_ms.
func printLatencies(prefix string, d []time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	kv(prefix+"_n", "%d", len(d))
	kv(prefix+"_p50_ms", "%.3f", ms(percentile(d, 50)))
	kv(prefix+"_p99_ms", "%.3f", ms(percentile(d, 99)))
	if len(d) > 0 {
		kv(prefix+"_max_ms", "%.3f", ms(d[len(d)-1]))
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
