package main

import (
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
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

// crlSources are every CRL the configuration names: crl.file/crl.url
// first (when set), then crl.extra in order.
func crlSources(c *Config) []CRLSource {
	var out []CRLSource
	if c.CRLFile != "" {
		out = append(out, CRLSource{Key: "crl", File: c.CRLFile, URL: c.CRLURL})
	}
	return append(out, c.CRLExtra...)
}

// setCRLExtra reads crl.extra: a list of {file: PATH, url: URL} mappings,
// each the CRL of one more CA.
func setCRLExtra(c *Config, n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		c.CRLExtra = nil
		return ""
	}
	if n.Kind != yaml.SequenceNode {
		return "must be a list of {file: PATH, url: URL} (url optional), one per further CA"
	}
	var out []CRLSource
	for i, item := range n.Content {
		src := CRLSource{Key: "crl.extra[" + strconv.Itoa(i) + "]"}
		if item.Kind != yaml.MappingNode {
			return fmt.Sprintf("item %d must be a mapping {file: PATH, url: URL}", i)
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			val, msg := scalar(v)
			if msg != "" {
				return fmt.Sprintf("item %d: %s: %s", i, k.Value, msg)
			}
			switch k.Value {
			case "file":
				src.File = val
			case "url":
				src.URL = val
			default:
				return fmt.Sprintf("item %d: unknown key %q (want file, url)", i, k.Value)
			}
		}
		out = append(out, src)
	}
	c.CRLExtra = out
	return ""
}

// setCRLStale reads crl.stale: warn (keep applying a CRL past its next
// update, and say so) or refuse (refuse every knock until a fresh CRL
// arrives).
func setCRLStale(c *Config, n *yaml.Node) string {
	s, msg := scalar(n)
	if msg != "" {
		return msg
	}
	switch s {
	case "warn":
		c.CRLStaleRefuse = false
	case "refuse":
		c.CRLStaleRefuse = true
	default:
		return fmt.Sprintf("%q is not a stale-CRL policy (warn or refuse)", s)
	}
	return ""
}

// setBool reads true or false.
func setBool(field func(*Config) *bool) keySetter {
	return func(c *Config, n *yaml.Node) string {
		s, msg := scalar(n)
		if msg != "" {
			return msg
		}
		switch s {
		case "true":
			*field(c) = true
		case "false":
			*field(c) = false
		default:
			return fmt.Sprintf("%q is not true or false", s)
		}
		return ""
	}
}

// checkCRL checks the CRL sources: a URL needs a file to keep the CRL
// in and must be http(s); no file is named twice.
func (c *Config) checkCRL() error {
	if c.CRLURL != "" && c.CRLFile == "" {
		return &ConfigError{Path: c.Path, Key: "crl.file", Line: c.set["crl.url"], Msg: "required when crl.url is set (the fetched CRL is kept there)"}
	}
	seen := map[string]string{}
	for _, src := range crlSources(c) {
		key := urlKey(src)
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
