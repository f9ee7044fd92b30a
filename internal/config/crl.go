package config

import (
	"fmt"
	"strings"
)

// CRLSource is one CRL the gatekeeper applies: the file it is read from
// and, optionally, the URL it is fetched from into that file.
type CRLSource struct {
	// Key names the source in messages: "crl" (crl.file and crl.url) or
	// "crl.extra[N]".
	Key string
	// File is where the CRL is read from (and a fetch writes it).
	File string
	// URL is fetched every crl.refresh; "" means the file only.
	URL string
}

// CRLSources are every CRL the configuration names: crl.file/crl.url
// first (when set), then crl.extra in order.
func (c *Config) CRLSources() []CRLSource {
	var out []CRLSource
	if c.CRLFile != "" {
		out = append(out, CRLSource{Key: "crl", File: c.CRLFile, URL: c.CRLURL})
	}
	return append(out, c.CRLExtra...)
}

// checkCRL checks the CRL sources: a URL needs a file to keep the CRL
// in and must be http(s); no file is named twice.
func (c *Config) checkCRL() error {
	if c.CRLURL != "" && c.CRLFile == "" {
		return &ConfigError{Path: c.Path, Key: "crl.file", Line: c.set["crl.url"], Msg: "required when crl.url is set (the fetched CRL is kept there)"}
	}
	seen := map[string]string{}
	for _, src := range c.CRLSources() {
		key := src.URLKey()
		line := c.set["crl.url"]
		if src.Key != "crl" {
			line = c.set["crl.extra"]
		}
		if src.File == "" {
			return &ConfigError{Path: c.Path, Key: src.Key + ".file", Line: line, Msg: "required (the CRL is read from there, and a fetch keeps it there)"}
		}
		if src.URL != "" && !strings.HasPrefix(src.URL, "http://") && !strings.HasPrefix(src.URL, "https://") {
			return &ConfigError{Path: c.Path, Key: key, Line: line, Msg: fmt.Sprintf("%q is not an http:// or https:// URL", src.URL)}
		}
		if prev, ok := seen[src.File]; ok {
			return &ConfigError{Path: c.Path, Key: src.Key, Line: line, Msg: fmt.Sprintf("file %s is already %s's; each CRL needs a file of its own", src.File, prev)}
		}
		seen[src.File] = src.Key
	}
	return nil
}

// HasCRLURL reports whether any CRL is fetched from a URL.
func (c *Config) HasCRLURL() bool {
	for _, src := range c.CRLSources() {
		if src.URL != "" {
			return true
		}
	}
	return false
}

// URLKey is the config key of the source's URL.
func (src CRLSource) URLKey() string {
	if src.Key == "crl" {
		return "crl.url"
	}
	return src.Key + ".url"
}

// FileKey is the config key of the source's file.
func (src CRLSource) FileKey() string {
	if src.Key == "crl" {
		return "crl.file"
	}
	return src.Key + ".file"
}
