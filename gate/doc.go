// Package gate is sknock's verdict engine: it decides knocks of both wire
// versions (Decide, a pure function; v2 in PROTOCOL-v2.md's order, mac1
// first), tells the knock reader which lane a datagram waits in
// (Engine.KnockLane), keeps the grants they earn (GrantTable), remembers the
// knocks it has seen (ReplayCache), answers the gate queue's question
// "may this source open this port now?" (Engine.Verdict), and owns the
// packets that race their own knock (Holder).
//
// Nothing here does I/O: it returns decisions and counts, and the daemon
// logs them; the clock and the trust state are passed in, and the Holder
// answers through a function it is given, so every rule is tested
// without root and with a fake clock.
// State that must outlive a trust reload (grants, seen knocks) lives in the
// Engine; the trust state (CA, CRL, server key) is immutable and swapped
// whole with an atomic pointer.
package gate
