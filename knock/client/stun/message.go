package stun

import (
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
)

// The part of RFC 8489 a Binding over UDP needs, encoded here rather than
// with github.com/pion/stun/v3: that package's root also holds its
// DTLS/TLS dialer, so importing it links pion/dtls and encoding/gob, whose
// initialisation cost every `sknock` start about a millisecond and a half
// (GODEBUG=inittrace=1) whether or not STUN is used. The tests check this
// codec against pion's, both ways.
const (
	headerSize  = 20
	magicCookie = 0x2112A442

	typeBindingRequest = 0x0001
	typeBindingSuccess = 0x0101

	attrMappedAddress    = 0x0001
	attrXORMappedAddress = 0x0020
	attrSoftware         = 0x8022
	attrFingerprint      = 0x8028

	// fingerprintXOR is XORed into FINGERPRINT's CRC-32 (RFC 8489 14.7).
	fingerprintXOR = 0x5354554e

	familyIPv4 = 0x01
	familyIPv6 = 0x02
)

// transactionID is a message's 96-bit transaction ID.
type transactionID [12]byte

// newTransactionID returns a random transaction ID.
func newTransactionID() transactionID {
	var id transactionID
	rand.Read(id[:])
	return id
}

// message is a decoded STUN message: its type, transaction ID and the
// attributes wanted here (the first of each type).
type message struct {
	typ   uint16
	id    transactionID
	attrs map[uint16][]byte
}

// encode builds a message of typ with the attributes in order, then a
// FINGERPRINT.
func encode(typ uint16, id transactionID, attrs ...attr) []byte {
	b := make([]byte, headerSize, 128)
	binary.BigEndian.PutUint16(b[0:], typ)
	binary.BigEndian.PutUint32(b[4:], magicCookie)
	copy(b[8:], id[:])
	for _, a := range attrs {
		b = appendAttr(b, a.typ, a.value)
	}
	// The length covers the FINGERPRINT attribute while its CRC is
	// computed over everything before it (RFC 8489 14.7).
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-headerSize+8))
	crc := crc32.ChecksumIEEE(b) ^ fingerprintXOR
	return appendAttr(b, attrFingerprint, binary.BigEndian.AppendUint32(nil, crc))
}

// attr is one attribute to encode.
type attr struct {
	typ   uint16
	value []byte
}

// appendAttr appends an attribute, padded to 4 bytes, and updates the
// header's length.
func appendAttr(b []byte, typ uint16, value []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)-headerSize))
	return b
}

// decode parses b as a STUN message; ok is false when it is not one (too
// short, bad cookie or length, an attribute running past the end, or a
// FINGERPRINT that does not match).
func decode(b []byte) (m message, ok bool) {
	if len(b) < headerSize || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:]) != magicCookie {
		return message{}, false
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 || headerSize+n != len(b) {
		return message{}, false
	}
	m.typ = binary.BigEndian.Uint16(b[0:])
	copy(m.id[:], b[8:headerSize])
	m.attrs = map[uint16][]byte{}
	for off := headerSize; off < len(b); {
		if len(b)-off < 4 {
			return message{}, false
		}
		typ, size := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+2:]))
		end := off + 4 + size
		if end > len(b) {
			return message{}, false
		}
		if typ == attrFingerprint {
			if size != 4 || end+(4-size%4)%4 != len(b) {
				return message{}, false
			}
			want := crc32.ChecksumIEEE(b[:off]) ^ fingerprintXOR
			if binary.BigEndian.Uint32(b[off+4:]) != want {
				return message{}, false
			}
		}
		if _, seen := m.attrs[typ]; !seen {
			m.attrs[typ] = b[off+4 : end]
		}
		off = end + (4-size%4)%4
	}
	return m, true
}

// address decodes a MAPPED-ADDRESS or, with xor, an XOR-MAPPED-ADDRESS
// value of a message with transaction ID id.
func address(v []byte, xor bool, id transactionID) (netip.AddrPort, bool) {
	if len(v) < 4 {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(v[2:])
	var mask [16]byte
	if xor {
		port ^= magicCookie >> 16
		binary.BigEndian.PutUint32(mask[:], magicCookie)
		copy(mask[4:], id[:])
	}
	switch {
	case v[1] == familyIPv4 && len(v) == 8:
		var a [4]byte
		for i := range a {
			a[i] = v[4+i] ^ mask[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom4(a), port), true
	case v[1] == familyIPv6 && len(v) == 20:
		var a [16]byte
		for i := range a {
			a[i] = v[4+i] ^ mask[i]
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), port), true
	}
	return netip.AddrPort{}, false
}

// xorAddress encodes ap as an XOR-MAPPED-ADDRESS value for id.
func xorAddress(ap netip.AddrPort, id transactionID) []byte {
	var mask [16]byte
	binary.BigEndian.PutUint32(mask[:], magicCookie)
	copy(mask[4:], id[:])
	a := ap.Addr().Unmap()
	family, raw := byte(familyIPv6), a.AsSlice()
	if a.Is4() {
		family = familyIPv4
	}
	v := []byte{0, family}
	v = binary.BigEndian.AppendUint16(v, ap.Port()^magicCookie>>16)
	for i, c := range raw {
		v = append(v, c^mask[i])
	}
	return v
}
