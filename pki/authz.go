package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	encasn1 "encoding/asn1"
	"errors"
	"fmt"
	"sknock/knock"
	"sknock/packet"
	"strconv"
	"strings"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// OIDAuthorization is the otherName type-id of the authorisation name.
var OIDAuthorization = encasn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 19518}

// oidSubjectAltName is the Subject Alternative Name extension.
var oidSubjectAltName = encasn1.ObjectIdentifier{2, 5, 29, 17}

// maxAuthorizationLen bounds the authorisation string read from a
// certificate or a command line; the knock must fit one datagram anyway.
const maxAuthorizationLen = 4096

// Permission is one protocol and port a client certificate may open.
type Permission struct {
	// Proto and Port are one protocol and port the certificate may open.
	Proto packet.Proto
	Port  uint16
}

// Authorization is the list of permissions of a client certificate, in the
// order the certificate lists them. A nil or empty Authorization allows
// nothing.
type Authorization []Permission

// Allows reports whether a grants proto and port.
func (a Authorization) Allows(proto packet.Proto, port uint16) bool {
	for _, p := range a {
		if p.Proto == proto && p.Port == port {
			return true
		}
	}
	return false
}

// String returns the wire form written into certificates:
// "1.2000,1.3000,0.8000".
func (a Authorization) String() string {
	var sb strings.Builder
	for i, p := range a {
		if i > 0 {
			sb.WriteByte(',')
		}
		wire, _ := knock.WireProto(p.Proto) // MarshalAuthorizationSAN refuses others
		sb.WriteString(strconv.Itoa(int(wire)))
		sb.WriteByte('.')
		sb.WriteString(strconv.Itoa(int(p.Port)))
	}
	return sb.String()
}

// CLIString returns the command-line form: "tcp/2000,tcp/3000,udp/8000".
func (a Authorization) CLIString() string {
	var sb strings.Builder
	for i, p := range a {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(p.Proto.String())
		sb.WriteByte('/')
		sb.WriteString(strconv.Itoa(int(p.Port)))
	}
	return sb.String()
}

// ParseAuthorization parses the wire form "PROTO.PORT,PROTO.PORT,...".
// PROTO is exactly "0" (UDP) or "1" (TCP); PORT is decimal digits only,
// 1..65535. Spaces and tabs around an item are tolerated (hand-written
// OpenSSL configurations contain "1.22, 1.80"); an empty item is an error.
// A string that is empty or blank is an empty Authorization, which allows
// nothing. Duplicates are kept as written.
func ParseAuthorization(s string) (Authorization, error) {
	return parseList(s, '.', parseWireProto)
}

// ParseAllow parses the command-line form "tcp/22,udp/8000" (protocol names
// in any case, spaces around items tolerated). Unlike ParseAuthorization it
// refuses an empty list: a command line that names no port is a mistake.
func ParseAllow(s string) (Authorization, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("parse allow list: empty")
	}
	return parseList(s, '/', packet.ParseProto)
}

// parseWireProto reads the wire form's protocol digit: exactly "0" or "1",
// the knock wire format's numbers.
func parseWireProto(s string) (packet.Proto, error) {
	if len(s) == 1 {
		if p, ok := knock.ProtoFromWire(s[0] - '0'); ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("protocol %q is neither 0 (udp) nor 1 (tcp)", s)
}

func parseList(s string, sep byte, parseProto func(string) (packet.Proto, error)) (Authorization, error) {
	if len(s) > maxAuthorizationLen {
		return nil, fmt.Errorf("parse authorization: longer than %d bytes", maxAuthorizationLen)
	}
	if strings.TrimSpace(s) == "" {
		return Authorization{}, nil
	}
	items := strings.Split(s, ",")
	a := make(Authorization, 0, len(items))
	for i, item := range items {
		item = strings.Trim(item, " \t")
		protoText, portText, ok := strings.Cut(item, string(sep))
		if !ok {
			return nil, fmt.Errorf("parse authorization item %d %q: want PROTO%cPORT", i+1, item, sep)
		}
		proto, err := parseProto(protoText)
		if err != nil {
			return nil, fmt.Errorf("parse authorization item %d %q: %w", i+1, item, err)
		}
		port, err := parsePort(portText)
		if err != nil {
			return nil, fmt.Errorf("parse authorization item %d %q: %w", i+1, item, err)
		}
		a = append(a, Permission{Proto: proto, Port: port})
	}
	return a, nil
}

// parsePort reads a decimal port 1..65535: digits only, no sign.
func parsePort(s string) (uint16, error) {
	if s == "" {
		return 0, errors.New("empty port")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("port %q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("port %q is not in 1..65535", s)
	}
	return uint16(n), nil
}

// AuthorizationFromCertificate returns the authorisation name of cert.
// found is false when cert has no such name (it then authorises nothing);
// an error means the SAN extension or the name is malformed, or the name
// appears more than once.
func AuthorizationFromCertificate(cert *x509.Certificate) (a Authorization, found bool, err error) {
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		text, found, err := authorizationFromSAN(ext.Value)
		if err != nil || !found {
			return nil, false, err
		}
		a, err := ParseAuthorization(text)
		if err != nil {
			return nil, false, err
		}
		return a, true, nil
	}
	return nil, false, nil
}

// authorizationFromSAN finds the authorisation otherName in a DER
// GeneralNames and returns its string.
func authorizationFromSAN(der []byte) (text string, found bool, err error) {
	input := cryptobyte.String(der)
	var names cryptobyte.String
	if !input.ReadASN1(&names, asn1.SEQUENCE) || !input.Empty() {
		return "", false, errors.New("parse subjectAltName: malformed GeneralNames")
	}
	otherNameTag := asn1.Tag(0).ContextSpecific().Constructed()
	for !names.Empty() {
		var name cryptobyte.String
		var tag asn1.Tag
		if !names.ReadAnyASN1(&name, &tag) {
			return "", false, errors.New("parse subjectAltName: malformed GeneralName")
		}
		if tag != otherNameTag {
			continue
		}
		var oid encasn1.ObjectIdentifier
		if !name.ReadASN1ObjectIdentifier(&oid) {
			return "", false, errors.New("parse subjectAltName: malformed otherName type-id")
		}
		if !oid.Equal(OIDAuthorization) {
			continue
		}
		if found {
			return "", false, errors.New("parse subjectAltName: authorisation name appears more than once")
		}
		var value, utf8 cryptobyte.String
		if !name.ReadASN1(&value, otherNameTag) || !name.Empty() ||
			!value.ReadASN1(&utf8, asn1.UTF8String) || !value.Empty() {
			return "", false, errors.New("parse subjectAltName: authorisation value is not [0] EXPLICIT UTF8String")
		}
		text, found = string(utf8), true
	}
	return text, found, nil
}

// MarshalAuthorizationSAN returns a Subject Alternative Name extension whose
// only name is the authorisation otherName for a, for issuing a client
// certificate (x509.Certificate.ExtraExtensions).
func MarshalAuthorizationSAN(a Authorization) (pkix.Extension, error) {
	text := a.String()
	if len(text) > maxAuthorizationLen {
		return pkix.Extension{}, fmt.Errorf("marshal authorization: longer than %d bytes", maxAuthorizationLen)
	}
	for _, p := range a {
		if !p.Proto.Valid() || p.Port == 0 {
			return pkix.Extension{}, fmt.Errorf("marshal authorization: invalid permission %s/%d", p.Proto, p.Port)
		}
	}
	return pkix.Extension{Id: oidSubjectAltName, Value: marshalAuthorizationText(text)}, nil
}

// marshalAuthorizationText encodes GeneralNames holding only the
// authorisation otherName with text.
func marshalAuthorizationText(text string) []byte {
	var b cryptobyte.Builder
	otherNameTag := asn1.Tag(0).ContextSpecific().Constructed()
	b.AddASN1(asn1.SEQUENCE, func(names *cryptobyte.Builder) {
		names.AddASN1(otherNameTag, func(name *cryptobyte.Builder) {
			name.AddASN1ObjectIdentifier(OIDAuthorization)
			name.AddASN1(otherNameTag, func(value *cryptobyte.Builder) {
				value.AddASN1(asn1.UTF8String, func(s *cryptobyte.Builder) {
					s.AddBytes([]byte(text))
				})
			})
		})
	})
	return b.BytesOrPanic() // only fails on a builder misuse, never on input
}
