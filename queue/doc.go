// Package queue owns the NFQUEUE plumbing of sknock: it binds the gate,
// knock and hold queues over mdlayher/netlink (its own bind, receive
// loop and batch verdicts; go-nfqueue's callback API suits neither), decodes
// the IP and transport headers of each queued packet into a reused
// packet.Header, hands the packet to a function, and turns that function's
// packet.Verdict into the kernel's verdict and mark.
//
// The package knows nothing of knocks or grants. A GateReader asks a
// decision function for the verdict of every packet inline, without
// allocating on its side, and answers runs of equal verdicts with one
// batch verdict; a Defer moves the packet to the hold queue (NF_QUEUE).
// A HoldReader hands each packet of the hold queue to its owner and
// settles it when told (Settle), one goroutine answering. A KnockReader
// copies the UDP payload of every knock, answers the packet at once (a
// drop, or with the reject mark a closed port's answer) and hands the
// copy to a bounded worker pool through lanes its owner's Classify
// chooses (fast before common, returning clients first within each), or
// decides it on the spot when Classify says it is cheap to.
//
// The kernel socket sits behind the Socket interface; queuetest holds a
// fake that feeds packets through the same path without root.
package queue
