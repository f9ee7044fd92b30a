package pki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"sknock/packet"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var authorizationTests = []struct {
	name    string
	give    string
	want    Authorization
	wantErr bool
}{
	{name: "vector a", give: "1.2000,1.3000,0.8000", want: Authorization{{packet.TCP, 2000}, {packet.TCP, 3000}, {packet.UDP, 8000}}},
	{name: "single", give: "1.22", want: Authorization{{packet.TCP, 22}}},
	{name: "bounds", give: "0.1,1.65535", want: Authorization{{packet.UDP, 1}, {packet.TCP, 65535}}},
	{name: "spaces around items", give: " 1.22 ,\t0.53", want: Authorization{{packet.TCP, 22}, {packet.UDP, 53}}},
	{name: "leading zeros", give: "1.0022", want: Authorization{{packet.TCP, 22}}},
	{name: "duplicates kept", give: "1.22,1.22", want: Authorization{{packet.TCP, 22}, {packet.TCP, 22}}},
	{name: "empty", give: "", want: Authorization{}},
	{name: "blank", give: "  ", want: Authorization{}},
	{name: "port zero", give: "1.0", wantErr: true},
	{name: "port too big", give: "1.65536", wantErr: true},
	{name: "proto 2", give: "2.22", wantErr: true},
	{name: "proto name", give: "tcp.22", wantErr: true},
	{name: "proto 01", give: "01.22", wantErr: true},
	{name: "sign", give: "1.+22", wantErr: true},
	{name: "negative", give: "1.-22", wantErr: true},
	{name: "hex", give: "1.0x16", wantErr: true},
	{name: "empty item", give: "1.22,,1.23", wantErr: true},
	{name: "trailing comma", give: "1.22,", wantErr: true},
	{name: "no dot", give: "122", wantErr: true},
	{name: "two dots", give: "1.2.2", wantErr: true},
	{name: "inner space", give: "1. 22", wantErr: true},
	{name: "cli form", give: "tcp/22", wantErr: true},
	{name: "huge", give: strings.Repeat("1.22,", 1000) + "1.22", wantErr: true},
}

func TestParseAuthorization(t *testing.T) {
	for _, tt := range authorizationTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAuthorization(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestParseAllow(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		want    Authorization
		wantErr bool
	}{
		{name: "two", give: "tcp/22,udp/8000", want: Authorization{{packet.TCP, 22}, {packet.UDP, 8000}}},
		{name: "case and spaces", give: "TCP/2000, Udp/53", want: Authorization{{packet.TCP, 2000}, {packet.UDP, 53}}},
		{name: "empty", give: "", wantErr: true},
		{name: "wire form", give: "1.22", wantErr: true},
		{name: "sctp", give: "sctp/22", wantErr: true},
		{name: "port zero", give: "tcp/0", wantErr: true},
		{name: "range", give: "tcp/1-2", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAllow(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestAuthorizationStrings(t *testing.T) {
	a := Authorization{{packet.TCP, 2000}, {packet.TCP, 3000}, {packet.UDP, 8000}}
	if got, want := a.String(), "1.2000,1.3000,0.8000"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got, want := a.CLIString(), "tcp/2000,tcp/3000,udp/8000"; got != want {
		t.Errorf("CLIString() = %q, want %q", got, want)
	}
	tests := []struct {
		proto packet.Proto
		port  uint16
		want  bool
	}{
		{packet.TCP, 2000, true}, {packet.UDP, 8000, true}, {packet.UDP, 2000, false}, {packet.TCP, 22, false},
	}
	for _, tt := range tests {
		if got := a.Allows(tt.proto, tt.port); got != tt.want {
			t.Errorf("Allows(%s, %d) = %v, want %v", tt.proto, tt.port, got, tt.want)
		}
	}
	if (Authorization(nil)).Allows(packet.TCP, 22) {
		t.Error("nil authorization allows")
	}
}

func TestAuthorizationCertificateRoundTrip(t *testing.T) {
	ca := newTestCA(t, "CA", nil)
	for _, give := range []string{"1.2000,1.3000,0.8000", "0.1", "1.65535"} {
		t.Run(give, func(t *testing.T) {
			cert, err := x509.ParseCertificate(ca.issue(t, clientTemplate(t, 9, give), nil))
			if err != nil {
				t.Fatal(err)
			}
			a, found, err := AuthorizationFromCertificate(cert)
			if err != nil || !found {
				t.Fatalf("found %v, err %v", found, err)
			}
			if a.String() != give {
				t.Errorf("got %q, want %q", a, give)
			}
		})
	}
}

func TestAuthorizationFromCertificate(t *testing.T) {
	ca := newTestCA(t, "CA", nil)
	withExt := func(exts ...pkix.Extension) *x509.Certificate {
		tmpl := clientTemplate(t, 9, "")
		tmpl.ExtraExtensions = exts
		cert, err := x509.ParseCertificate(ca.issue(t, tmpl, nil))
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	twice := rawAuthzSAN("1.22")
	inner := twice.Value[2:] // the otherName, after the SEQUENCE header
	twice.Value = append([]byte{0x30, byte(2 * len(inner))}, append(append([]byte{}, inner...), inner...)...)
	tests := []struct {
		name      string
		give      *x509.Certificate
		want      string
		wantFound bool
		wantErr   bool
	}{
		{name: "none", give: withExt()},
		{name: "dns only", give: func() *x509.Certificate {
			tmpl := clientTemplate(t, 9, "")
			tmpl.DNSNames = []string{"example.test"}
			cert, _ := x509.ParseCertificate(ca.issue(t, tmpl, nil))
			return cert
		}()},
		{name: "other otherName", give: withExt(pkix.Extension{Id: oidSubjectAltName, Value: []byte{
			0x30, 0x0d, 0xa0, 0x0b, 0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x04, 0x0c, 0x02, 'h', 'i'}})},
		{name: "ok", give: withExt(rawAuthzSAN("1.22")), want: "1.22", wantFound: true},
		{name: "empty string", give: withExt(rawAuthzSAN("")), want: "", wantFound: true},
		{name: "bad text", give: withExt(rawAuthzSAN("1.99999")), wantErr: true},
		{name: "twice", give: withExt(twice), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, found, err := AuthorizationFromCertificate(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q, want error", a)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.wantFound || a.String() != tt.want {
				t.Errorf("got %q found %v, want %q found %v", a, found, tt.want, tt.wantFound)
			}
		})
	}
}

func TestAuthorizationFromSANMalformed(t *testing.T) {
	tests := []struct {
		name string
		give []byte
	}{
		{name: "empty", give: nil},
		{name: "not a sequence", give: []byte{0x04, 0x00}},
		{name: "trailing bytes", give: []byte{0x30, 0x00, 0x00}},
		{name: "truncated name", give: []byte{0x30, 0x02, 0xa0, 0x05}},
		{name: "bad oid", give: []byte{0x30, 0x04, 0xa0, 0x02, 0x05, 0x00}},
		{name: "value not utf8string", give: func() []byte {
			der := rawAuthzSAN("").Value
			der[len(der)-2] = 0x16 // IA5String instead of UTF8String
			return der
		}()},
		{name: "value not explicit", give: func() []byte {
			der := rawAuthzSAN("").Value
			der[len(der)-4] = 0x80
			return der
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := authorizationFromSAN(tt.give); err == nil {
				t.Error("no error")
			}
		})
	}
}

func TestMarshalAuthorizationSANRefuses(t *testing.T) {
	for _, give := range []Authorization{{{Proto: 2, Port: 22}}, {{Proto: packet.TCP, Port: 0}}} {
		if _, err := MarshalAuthorizationSAN(give); err == nil {
			t.Errorf("MarshalAuthorizationSAN(%v): no error", give)
		}
	}
}

func FuzzParseAuthorization(f *testing.F) {
	for _, tt := range authorizationTests {
		f.Add(tt.give)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthorization(s)
		if err != nil {
			return
		}
		b, err := ParseAuthorization(a.String())
		if err != nil {
			t.Fatalf("reparse %q (from %q): %v", a.String(), s, err)
		}
		if diff := cmp.Diff(a, b); diff != "" {
			t.Fatalf("round trip of %q (-first +second)\n%s", s, diff)
		}
		ext, err := MarshalAuthorizationSAN(a)
		if err != nil {
			t.Fatalf("marshal %q: %v", a, err)
		}
		text, found, err := authorizationFromSAN(ext.Value)
		if err != nil || !found || text != a.String() {
			t.Fatalf("SAN round trip of %q: got %q %v %v", a, text, found, err)
		}
	})
}
