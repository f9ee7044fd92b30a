//go:build soakfault

package main

// Faults for scripts/soak.sh to show that its leak, log-rate and
// watchdog invariants can fail: built only with -tags soakfault, and
// active only when SKNOCK_SOAK_FAULT names one. Each SIGHUP (a reload)
// then leaks what it names: "fd" three descriptors, "heap" 4 MiB of heap,
// "goroutine" three goroutines (so that a 90 s soak's leak phase, about
// eight reloads, shows them past its bounds); "log" writes 300 lines a
// second to stderr.
// No release build holds this file.

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// soakLeaked and soakFiles hold what the faults leak, so that nothing
// collects it.
var (
	soakLeaked [][]byte
	soakFiles  []*os.File
)

func init() {
	fault := os.Getenv("SKNOCK_SOAK_FAULT")
	if fault == "" {
		return
	}
	if fault == "log" {
		go func() {
			for range time.Tick(10 * time.Millisecond) {
				for range 3 {
					fmt.Fprintln(os.Stderr, `{"level":"info","msg":"soak fault: log flood"}`)
				}
			}
		}()
		return
	}
	hup := make(chan os.Signal, 16)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			switch fault {
			case "fd":
				for range 3 {
					if f, err := os.Open("/dev/null"); err == nil {
						soakFiles = append(soakFiles, f) // kept open: the leak
					}
				}
			case "heap":
				b := make([]byte, 4<<20)
				for i := range b {
					b[i] = byte(i)
				}
				soakLeaked = append(soakLeaked, b)
			case "goroutine":
				for range 3 {
					go func() { select {} }()
				}
			}
		}
	}()
}
