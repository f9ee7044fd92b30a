package config

import (
	"strings"
	"testing"
)

func TestParseConfigCRLKeys(t *testing.T) {
	const head = "gate:\n  protect: [tcp/2000]\n"
	tests := []struct {
		name    string
		give    string
		want    func(Config) bool
		wantErr string
	}{
		{name: "defaults", give: "", want: func(c Config) bool { return !c.CRLStaleRefuse && !c.CRLRequired && c.CRLExtra == nil }},
		{name: "stale refuse, required", give: "crl:\n  file: /a.crl\n  stale: refuse\n  required: true\n",
			want: func(c Config) bool { return c.CRLStaleRefuse && c.CRLRequired }},
		{name: "extra", give: "crl:\n  file: /a.crl\n  url: https://ca/a.crl\n  extra:\n    - {file: /b.crl, url: http://ca/b.crl}\n    - file: /c.crl\n",
			want: func(c Config) bool {
				s := c.CRLSources()
				return len(s) == 3 && s[1] == CRLSource{Key: "crl.extra[0]", File: "/b.crl", URL: "http://ca/b.crl"} && s[2].File == "/c.crl" && s[0].URL == "https://ca/a.crl"
			}},
		{name: "bad stale", give: "crl:\n  stale: ignore\n", wantErr: `crl.stale: "ignore" is not a stale-CRL policy (warn or refuse)`},
		{name: "bad required", give: "crl:\n  required: yes please\n", wantErr: `crl.required: "yes please" is not true or false`},
		{name: "extra not a list", give: "crl:\n  extra: /b.crl\n", wantErr: "crl.extra: must be a list"},
		{name: "extra unknown key", give: "crl:\n  extra:\n    - {path: /b.crl}\n", wantErr: `crl.extra: item 0: unknown key "path"`},
		{name: "extra without file", give: "crl:\n  extra:\n    - {url: http://ca/b.crl}\n", wantErr: "crl.extra[0].file: required"},
		{name: "extra bad url", give: "crl:\n  extra:\n    - {file: /b.crl, url: ftp://ca/b.crl}\n", wantErr: `crl.extra[0].url: "ftp://ca/b.crl" is not an http:// or https:// URL`},
		{name: "file twice", give: "crl:\n  file: /a.crl\n  extra:\n    - {file: /a.crl}\n", wantErr: "crl.extra[0]: file /a.crl is already crl's"},
		{name: "url without file", give: "crl:\n  url: http://ca/a.crl\n", wantErr: "crl.file: required when crl.url is set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("test.yaml", []byte(head+tt.give))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}
