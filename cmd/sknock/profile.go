package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// profileFileHelp documents where profiles are read from.
const profileFileHelp = "profiles file (default: $XDG_CONFIG_HOME/sknock/config.yaml, else ~/.config/sknock/config.yaml; a missing default file is no error)"

// profileFile is the client's configuration: the STUN servers and the
// profile of each host.
//
//	stun: [stun.example.net:3478]
//	hosts:
//	  gate1:
//	    address: gate1.example.net
//	    pkcs12: ~/.config/sknock/me.pfx
//	    server_cert: ~/.config/sknock/gate1.pem
//	    password_file: ~/.config/sknock/me.pass
//	    ports: [tcp/22]
type profileFile struct {
	// STUN are the STUN servers (HOST:PORT) of every host without its
	// own; naming any makes the client learn its public address from
	// plain STUN instead of the address echo.
	STUN []string `yaml:"stun"`
	// AddressURL is the HTTPS address echo of every host without its own.
	AddressURL string `yaml:"address_url"`
	// Hosts are the profiles by name.
	Hosts map[string]*profile `yaml:"hosts"`
}

// profile is one host's settings; every field has the flag of the same
// name (server_cert: --server-cert), which overrides it.
type profile struct {
	Address      string   `yaml:"address"`
	PKCS12       string   `yaml:"pkcs12"`
	ServerCert   string   `yaml:"server_cert"`
	PasswordFile string   `yaml:"password_file"`
	PasswordEnv  string   `yaml:"password_env"`
	KeyCache     string   `yaml:"key_cache"`
	SourceIP     string   `yaml:"source_ip"`
	KnockPort    int      `yaml:"knock_port"`
	Ports        []string `yaml:"ports"`
	STUN         []string `yaml:"stun"`
	AddressURL   string   `yaml:"address_url"`
	// CRLURL is where the host's CA publishes its CRL, fetched when a
	// port does not open to tell whether the certificate is revoked
	// (profile only; default: the certificate's CRL distribution point).
	CRLURL string `yaml:"crl_url"`
	Family string `yaml:"family"`
	// Protocol is the knock wire version, 1 or 2 (0: the default, 2).
	Protocol int `yaml:"protocol"`

	name     string        // the profile's name
	keyCache time.Duration // KeyCache parsed
}

// defaultProfilePath is where profiles are read from without
// --profile-file: $XDG_CONFIG_HOME/sknock/config.yaml, else
// ~/.config/sknock/config.yaml (on every system, so that one file serves
// Linux, macOS and Windows users alike).
func defaultProfilePath() string {
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "sknock", "config.yaml")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".config", "sknock", "config.yaml")
}

var unknownField = regexp.MustCompile(`line (\d+): field (\S+) not found in type \S+`)

// loadProfiles reads the profiles file at path. A missing file is no
// error unless explicit (the user named it with --profile-file).
func loadProfiles(path string, explicit bool) (*profileFile, error) {
	pf := &profileFile{}
	if path == "" {
		return pf, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return pf, nil
	}
	if err != nil {
		return nil, fmt.Errorf("profiles: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(pf); err != nil && !errors.Is(err, io.EOF) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
		msg = unknownField.ReplaceAllString(msg, `line $1: unknown key "$2"`)
		return nil, fmt.Errorf("profiles %s: %s", path, strings.Join(strings.Fields(msg), " "))
	}
	dir := filepath.Dir(path)
	for name, p := range pf.Hosts {
		if p == nil {
			p = &profile{}
			pf.Hosts[name] = p
		}
		p.name = name
		if err := p.check(path, dir); err != nil {
			return nil, err
		}
	}
	return pf, nil
}

// check validates p's values and makes its paths absolute (~ is the home
// directory; relative paths are relative to the profiles file).
func (p *profile) check(path, dir string) error {
	bad := func(key, format string, args ...any) error {
		return fmt.Errorf("profiles %s: hosts.%s.%s: %s", path, p.name, key, fmt.Sprintf(format, args...))
	}
	for _, f := range []struct {
		key string
		v   *string
	}{{"pkcs12", &p.PKCS12}, {"server_cert", &p.ServerCert}, {"password_file", &p.PasswordFile}} {
		if *f.v == "" {
			continue
		}
		abs, err := expandPath(*f.v, dir)
		if err != nil {
			return bad(f.key, "%v", err)
		}
		*f.v = abs
	}
	if p.PasswordFile != "" && p.PasswordEnv != "" {
		return bad("password_env", "give password_file or password_env, not both")
	}
	if p.KeyCache != "" {
		d, err := time.ParseDuration(p.KeyCache)
		if err != nil || d < 0 || d > maxKeyCache {
			return bad("key_cache", "%q is not a duration between 0 and %s", p.KeyCache, maxKeyCache)
		}
		p.keyCache = d
	}
	if p.KnockPort < 0 || p.KnockPort > 65535 {
		return bad("knock_port", "%d is not in 0..65535", p.KnockPort)
	}
	if p.Protocol != 0 && p.Protocol != 1 && p.Protocol != 2 {
		return bad("protocol", "%d is not 1 or 2", p.Protocol)
	}
	switch p.Family {
	case "", "any", "ipv4", "ipv6":
	default:
		return bad("family", "%q is not ipv4, ipv6 or any", p.Family)
	}
	if p.SourceIP != "" {
		if _, _, err := parseSourceIP(p.SourceIP); err != nil {
			return bad("source_ip", "%v", err)
		}
	}
	return nil
}

// expandPath resolves ~/ and paths relative to dir.
func expandPath(p, dir string) (string, error) {
	if rest, ok := strings.CutPrefix(p, "~/"); ok || p == "~" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		return filepath.Join(home, rest), nil
	}
	if filepath.IsAbs(p) {
		return p, nil
	}
	return filepath.Join(dir, p), nil
}

// find returns the profile named host, or else the one whose address is
// host (an ssh ProxyCommand's %h is the HostName), or nil.
func (pf *profileFile) find(host string) *profile {
	if p, ok := pf.Hosts[host]; ok {
		return p
	}
	for _, p := range pf.Hosts {
		if p.Address != "" && strings.EqualFold(p.Address, host) {
			return p
		}
	}
	return nil
}
