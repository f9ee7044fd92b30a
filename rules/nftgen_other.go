//go:build !linux

package rules

import "errors"

// nftGeneration is Linux-only; elsewhere Repair always reads the tables.
func nftGeneration() (uint32, error) {
	return 0, errors.New("nf_tables generation: not on this system")
}
