package rules

// nftGeneration returns the nf_tables ruleset generation of the caller's
// network namespace, with a reader of its own: an unchanged generation
// means unchanged rules, one netlink round trip instead of running
// iptables-save. Where there is no nf_tables it fails, and Repair reads
// the tables every time.
func nftGeneration() (uint32, error) {
	r, err := OpenGenerationReader()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	return r.Generation()
}
