// Package daemon is sknockd: it binds the gate, knock and hold queues,
// puts the rule set and the trust state in force, decides every packet
// and knock through gate.Engine and logs what it decided, keeps the rules
// in place, refreshes the CRLs, reloads on SIGHUP, and answers the
// metrics listener, the control socket and systemd. cmd/sknockd is its
// main; Serve is the one entry point, over OSDeps, the boundaries with
// the kernel and the network, which tests replace (and watch through
// Hooks).
//
// The running state (configuration, trust state, its description) is
// replaced whole by one apply (apply.go), at start, on SIGHUP and after
// a CRL refresh. The counters are one list (counters.go), rendered by
// Prometheus, status and the counters line alike.
package daemon
