package rules

import (
	"encoding/binary"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nf_tables netlink constants (linux/netfilter/nfnetlink.h, nf_tables.h).
const (
	nfnlSubsysNFTables = 10 // NFNL_SUBSYS_NFTABLES
	nftMsgGetGen       = 16 // NFT_MSG_GETGEN
	nftaGenID          = 1  // NFTA_GEN_ID, u32 big endian
	nfgenmsgLen        = 4  // struct nfgenmsg: family, version, res_id
)

// nftGeneration returns the nf_tables ruleset generation of the caller's
// network namespace. The kernel increments it with every committed change
// to any nftables table, iptables-nft's included, so an unchanged
// generation means unchanged rules: one netlink round trip instead of
// running iptables-save.
func nftGeneration() (uint32, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return 0, fmt.Errorf("nf_tables generation: %w", err)
	}
	defer c.Close()
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(nfnlSubsysNFTables<<8 | nftMsgGetGen),
			Flags: netlink.Request,
		},
		Data: make([]byte, nfgenmsgLen), // AF_UNSPEC, NFNETLINK_V0, res_id 0
	})
	if err != nil {
		return 0, fmt.Errorf("nf_tables generation: %w", err)
	}
	for _, m := range msgs {
		if len(m.Data) < nfgenmsgLen {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[nfgenmsgLen:])
		if err != nil {
			return 0, fmt.Errorf("nf_tables generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == nftaGenID {
				return ad.Uint32(), nil
			}
		}
		if err := ad.Err(); err != nil {
			return 0, fmt.Errorf("nf_tables generation: %w", err)
		}
	}
	return 0, fmt.Errorf("nf_tables generation: no NFTA_GEN_ID in the answer")
}
