//go:build !linux

package rules

import "errors"

// GenerationReader is Linux-only; elsewhere OpenGenerationReader fails.
type GenerationReader struct{}

// OpenGenerationReader fails: nf_tables is Linux's.
func OpenGenerationReader() (*GenerationReader, error) {
	return nil, errors.New("nf_tables generation: not on this system")
}

// Generation fails.
func (*GenerationReader) Generation() (uint32, error) {
	return 0, errors.New("nf_tables generation: not on this system")
}

// Close does nothing.
func (*GenerationReader) Close() error { return nil }
