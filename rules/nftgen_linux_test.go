//go:build linux

package rules

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// genMessage builds one netlink message of type typ and sequence seq
// around body.
func genMessage(typ uint16, seq uint32, body []byte) []byte {
	m := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body)+3)
	binary.NativeEndian.PutUint32(m[0:], uint32(nlmsgHdrLen+len(body)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint32(m[8:], seq)
	m = append(m, body...)
	for len(m)%4 != 0 {
		m = append(m, 0)
	}
	return m
}

// genBody is an nfgenmsg and NFTA_GEN_ID gen.
func genBody(gen uint32) []byte {
	b := []byte{0, 0, 0, 0, 8, 0, nftaGenID, 0}
	return binary.BigEndian.AppendUint32(b, gen)
}

// TestParseGenAnswer: the answer to the request's sequence is found
// behind a stale one, the kernel's error is returned as such, and a
// malformed datagram is an error, never a panic.
func TestParseGenAnswer(t *testing.T) {
	newGen := uint16(nfnlSubsysNFTables<<8 | 15)
	errno := -int32(unix.EPERM)
	errBody := binary.NativeEndian.AppendUint32(nil, uint32(errno))
	for _, tc := range []struct {
		name    string
		b       []byte
		gen     uint32
		found   bool
		wantErr error
	}{
		{"answer", genMessage(newGen, 7, genBody(42)), 42, true, nil},
		{"stale then answer", append(genMessage(newGen, 6, genBody(41)), genMessage(newGen, 7, genBody(42))...), 42, true, nil},
		{"only stale", genMessage(newGen, 6, genBody(41)), 0, false, nil},
		{"kernel error", genMessage(unix.NLMSG_ERROR, 7, errBody), 0, true, unix.EPERM},
		{"no gen id", genMessage(newGen, 7, []byte{0, 0, 0, 0}), 0, true, nil},
		{"length beyond the datagram", genMessage(newGen, 7, genBody(42))[:12], 0, false, nil},
		{"bad header length", func() []byte { m := genMessage(newGen, 7, genBody(42)); m[0] = 200; return m }(), 0, false, errGenMalformed},
		{"bad attribute length", func() []byte { m := genMessage(newGen, 7, genBody(42)); m[nlmsgHdrLen+4] = 99; return m }(), 0, true, errGenMalformed},
	} {
		gen, found, err := parseGenAnswer(tc.b, 7)
		if gen != tc.gen || found != tc.found {
			t.Errorf("%s: got %d, %v, %v; want %d, %v", tc.name, gen, found, err, tc.gen, tc.found)
		}
		if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: error %v, want %v", tc.name, err, tc.wantErr)
		}
		if tc.name == "no gen id" && err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
