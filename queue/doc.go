// Package queue owns the NFQUEUE plumbing of sknock: it binds the gate and
// knock queues through go-nfqueue and mdlayher/netlink, decodes the IP and
// transport headers of each queued packet into a reused Header, hands the
// packet to a function, and turns that function's Verdict into the kernel's
// verdict and mark.
//
// The package knows nothing of knocks or grants. A GateReader asks a
// decision function for the verdict of every packet inline, without
// allocating on its side; a KnockReader copies the UDP payload of every
// knock, drops the packet at once and hands the copy to a bounded worker
// pool.
//
// The kernel socket sits behind the Socket interface; queuetest holds a
// fake that feeds packets through the same path without root.
package queue
