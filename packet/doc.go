// Package packet owns what the NFQUEUE readers (package queue) and the
// verdict engine (package gate) say about one packet: its decoded IP and
// transport header (Header, filled in place by Decode without
// allocating), the transport protocols (Proto, also the protocol a knock
// asks for and a rule matches), and the answer for it (Verdict).
//
// It is the role tailscale's net/packet plays for its filter: one type per
// idea, shared by the packages that read packets and the one that decides
// about them, with conversions only where a wire format spells them
// otherwise.
package packet
