package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadProfiles: any profiles file is loaded or refused with an error,
// never a panic, and a loaded profile's values passed their checks.
func FuzzLoadProfiles(f *testing.F) {
	f.Add("hosts:\n  gate1:\n    address: 198.18.0.1\n    pkcs12: a.pfx\n    ports: [tcp/22]\n    source_ip: auto\n")
	f.Add("stun: [a:1]\nhosts:\n  g: {family: ipv6, knock_port: 40000, key_cache: 1h}\n")
	f.Add("hosts:\n  g:\n    colour: blue\n")
	f.Add("hosts: [1, 2]\n")
	f.Add("")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		pf, err := loadProfiles(path, true)
		if err != nil {
			return
		}
		for name, p := range pf.Hosts {
			if p == nil || p.name != name || p.KnockPort < 0 || p.KnockPort > 65535 || p.keyCache < 0 || p.keyCache > maxKeyCache {
				t.Fatalf("profile %q loaded with bad values: %+v", name, p)
			}
		}
	})
}
