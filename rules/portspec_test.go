package rules_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"sknock/packet"
	"sknock/rules"
)

var portSpecTests = []struct {
	name    string
	give    string
	want    rules.PortSpec
	wantErr bool
}{
	{name: "tcp port", give: "tcp/22", want: rules.PortSpec{Proto: packet.TCP, First: 22, Last: 22}},
	{name: "udp port", give: "udp/8000", want: rules.PortSpec{Proto: packet.UDP, First: 8000, Last: 8000}},
	{name: "range", give: "tcp/8000-8100", want: rules.PortSpec{Proto: packet.TCP, First: 8000, Last: 8100}},
	{name: "one-port range", give: "tcp/8000-8000", want: rules.PortSpec{Proto: packet.TCP, First: 8000, Last: 8000}},
	{name: "tcp all", give: "tcp/*", want: rules.PortSpec{Proto: packet.TCP, All: true}},
	{name: "udp all", give: "udp/*", want: rules.PortSpec{Proto: packet.UDP, All: true}},
	{name: "max port", give: "udp/65535", want: rules.PortSpec{Proto: packet.UDP, First: 65535, Last: 65535}},
	{name: "empty", give: "", wantErr: true},
	{name: "no slash", give: "tcp22", wantErr: true},
	{name: "upper case", give: "TCP/22", wantErr: true},
	{name: "sctp", give: "sctp/22", wantErr: true},
	{name: "port zero", give: "tcp/0", wantErr: true},
	{name: "too big", give: "tcp/65536", wantErr: true},
	{name: "leading zero", give: "tcp/022", wantErr: true},
	{name: "plus", give: "tcp/+22", wantErr: true},
	{name: "space", give: "tcp/ 22", wantErr: true},
	{name: "backwards", give: "tcp/9000-8000", wantErr: true},
	{name: "open range", give: "tcp/8000-", wantErr: true},
	{name: "colon range", give: "tcp/8000:8100", wantErr: true},
	{name: "star range", give: "tcp/*-9", wantErr: true},
	{name: "two slashes", give: "tcp/22/33", wantErr: true},
	{name: "missing port", give: "udp/", wantErr: true},
}

func TestParsePortSpec(t *testing.T) {
	for _, tt := range portSpecTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rules.ParsePortSpec(tt.give)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParsePortSpec(%q) = %v, want error", tt.give, got)
				}
				if !errors.Is(err, rules.ErrBadPortSpec) {
					t.Errorf("error %v does not wrap ErrBadPortSpec", err)
				}
				if want := `"` + tt.give + `"`; !contains(err.Error(), want) {
					t.Errorf("error %q does not name the spec %s", err, want)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePortSpec(%q): %v", tt.give, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParsePortSpec(%q) (-want +got):\n%s", tt.give, diff)
			}
		})
	}
}

func TestPortSpecString(t *testing.T) {
	for _, give := range []string{"tcp/22", "udp/8000", "tcp/8000-8100", "tcp/*", "udp/*"} {
		p, err := rules.ParsePortSpec(give)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.String(); got != give {
			t.Errorf("String() = %q, want %q", got, give)
		}
	}
}

func TestPortSpecContainsOverlaps(t *testing.T) {
	spec := func(s string) rules.PortSpec {
		p, err := rules.ParsePortSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	containsTests := []struct {
		spec  string
		proto packet.Proto
		port  uint16
		want  bool
	}{
		{"tcp/22", packet.TCP, 22, true},
		{"tcp/22", packet.UDP, 22, false},
		{"tcp/22", packet.TCP, 23, false},
		{"tcp/8000-8100", packet.TCP, 8000, true},
		{"tcp/8000-8100", packet.TCP, 8100, true},
		{"tcp/8000-8100", packet.TCP, 8101, false},
		{"udp/*", packet.UDP, 1, true},
		{"udp/*", packet.TCP, 1, false},
	}
	for _, tt := range containsTests {
		if got := spec(tt.spec).Contains(tt.proto, tt.port); got != tt.want {
			t.Errorf("%s.Contains(%s, %d) = %v, want %v", tt.spec, tt.proto, tt.port, got, tt.want)
		}
	}
	overlapTests := []struct {
		a, b string
		want bool
	}{
		{"tcp/22", "tcp/22", true},
		{"tcp/22", "udp/22", false},
		{"tcp/1-10", "tcp/10-20", true},
		{"tcp/1-10", "tcp/11-20", false},
		{"tcp/5", "tcp/1-10", true},
		{"tcp/*", "tcp/9", true},
		{"udp/*", "tcp/*", false},
	}
	for _, tt := range overlapTests {
		a, b := spec(tt.a), spec(tt.b)
		if got := a.Overlaps(b); got != tt.want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := b.Overlaps(a); got != tt.want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
	}
}

// FuzzParsePortSpec checks that every accepted spec prints back to the
// exact value it parsed from, in one canonical spelling.
func FuzzParsePortSpec(f *testing.F) {
	for _, tt := range portSpecTests {
		f.Add(tt.give)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := rules.ParsePortSpec(s)
		if err != nil {
			return
		}
		text := p.String()
		again, err := rules.ParsePortSpec(text)
		if err != nil {
			t.Fatalf("ParsePortSpec(%q) = %+v, whose String %q does not parse: %v", s, p, text, err)
		}
		if again != p {
			t.Fatalf("round trip of %q: %+v → %q → %+v", s, p, text, again)
		}
		if again.String() != text {
			t.Fatalf("String not canonical: %q then %q", text, again.String())
		}
	})
}
