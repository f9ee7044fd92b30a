// Package gate is sknock's verdict engine: it decides knocks (Decide, a
// pure function), keeps the grants they earn (GrantTable), remembers the
// knocks it has seen (ReplayCache), and answers the gate queue's question
// "may this source open this port now?" (Engine.Verdict).
//
// Nothing here does I/O: the clock, the logger and the trust state are
// passed in, so every rule is tested without root and with a fake clock.
// State that must outlive a trust reload (grants, seen knocks) lives in the
// Engine; the trust state (CA, CRL, server key) is immutable and swapped
// whole with an atomic pointer.
package gate
