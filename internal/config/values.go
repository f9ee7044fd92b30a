package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"sknock/gate"
	"sknock/rules"
)

// value is how one key is read from the file into a Config (set returns
// a message when the value is wrong for the key) and read back from it
// (get, for comparing two configurations).
type value struct {
	set func(c *Config, n *yaml.Node) string
	get func(c *Config) any
}

// field makes the value of a key kept in one field of Config: parse reads
// the YAML node.
func field[T any](at func(*Config) *T, parse func(n *yaml.Node) (T, string)) value {
	return value{
		set: func(c *Config, n *yaml.Node) string {
			v, msg := parse(n)
			if msg == "" {
				*at(c) = v
			}
			return msg
		},
		get: func(c *Config) any { return *at(c) },
	}
}

func scalar(n *yaml.Node) (string, string) {
	if n.Kind != yaml.ScalarNode {
		return "", "must be a single value"
	}
	return n.Value, ""
}

// isNull reports whether n is YAML's null (an empty value, ~ or null).
func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

func stringField(at func(*Config) *string) value {
	return field(at, func(n *yaml.Node) (string, string) {
		s, msg := scalar(n)
		if isNull(n) {
			s = ""
		}
		return s, msg
	})
}

func durationField(at func(*Config) *time.Duration, min, max time.Duration) value {
	return field(at, func(n *yaml.Node) (time.Duration, string) {
		s, msg := scalar(n)
		if msg != "" {
			return 0, msg
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Sprintf("%q is not a duration (write e.g. 15s, 30m)", s)
		}
		if d < min || d > max {
			return 0, fmt.Sprintf("%s is out of range (%s to %s)", d, min, max)
		}
		return d, ""
	})
}

func parseInt(n *yaml.Node, min, max int) (int, string) {
	s, msg := scalar(n)
	if msg != "" {
		return 0, msg
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Sprintf("%q is not a whole number", s)
	}
	if v < min || v > max {
		return 0, fmt.Sprintf("%d is out of range (%d to %d)", v, min, max)
	}
	return v, ""
}

func intField(at func(*Config) *int, min, max int) value {
	return field(at, func(n *yaml.Node) (int, string) { return parseInt(n, min, max) })
}

func queueField(at func(*Config) *uint16) value {
	return field(at, func(n *yaml.Node) (uint16, string) {
		v, msg := parseInt(n, 0, 65535)
		return uint16(v), msg
	})
}

// boolField reads true or false.
func boolField(at func(*Config) *bool) value {
	return field(at, func(n *yaml.Node) (bool, string) {
		s, msg := scalar(n)
		if msg != "" {
			return false, msg
		}
		switch s {
		case "true":
			return true, ""
		case "false":
			return false, ""
		}
		return false, fmt.Sprintf("%q is not true or false", s)
	})
}

// knockPorts reads knock.ports, FIRST:LAST, into two fields.
var knockPorts = value{
	set: func(c *Config, n *yaml.Node) string {
		s, msg := scalar(n)
		if msg != "" {
			return msg
		}
		lo, hi, ok := strings.Cut(s, ":")
		if !ok {
			hi = lo
		}
		first, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		last, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || first == 0 || first > last {
			return fmt.Sprintf("%q is not a port range (write FIRST:LAST, e.g. 10000:60000)", s)
		}
		c.Rules.KnockFirst, c.Rules.KnockLast = uint16(first), uint16(last)
		return ""
	},
	get: func(c *Config) any { return [2]uint16{c.Rules.KnockFirst, c.Rules.KnockLast} },
}

func portList(at func(*Config) *[]rules.PortSpec) value {
	return field(at, func(n *yaml.Node) ([]rules.PortSpec, string) {
		if isNull(n) {
			return nil, ""
		}
		if n.Kind != yaml.SequenceNode {
			return nil, "must be a list such as [tcp/2000, udp/8000]"
		}
		var specs []rules.PortSpec
		for _, item := range n.Content {
			s, msg := scalar(item)
			if msg != "" {
				return nil, msg
			}
			p, err := rules.ParsePortSpec(s)
			if err != nil {
				return nil, err.Error()
			}
			specs = append(specs, p)
		}
		return specs, ""
	})
}

var policy = field(func(c *Config) *gate.Policy { return &c.Policy }, func(n *yaml.Node) (gate.Policy, string) {
	s, msg := scalar(n)
	if msg != "" {
		return 0, msg
	}
	p, err := gate.ParsePolicy(s)
	if err != nil {
		return 0, err.Error()
	}
	return p, ""
})

// revokeMark reads gate.revoke_mark, deprecated (issue 19): it still
// parses, so that old configs load, but nothing uses it; sknockd warns.
var revokeMark = field(func(c *Config) *uint32 { return &c.Rules.RevokeMark }, func(n *yaml.Node) (uint32, string) {
	s, msg := scalar(n)
	if msg != "" {
		return 0, msg
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Sprintf("%q is not a 32-bit connection mark (e.g. 0x2; 0 turns it off)", s)
	}
	return uint32(v), ""
})

var rejectMark = field(func(c *Config) *uint32 { return &c.Rules.Mark }, func(n *yaml.Node) (uint32, string) {
	s, msg := scalar(n)
	if msg != "" {
		return 0, msg
	}
	v, err := strconv.ParseUint(s, 0, 32)
	if err != nil || v == 0 {
		return 0, fmt.Sprintf("%q is not a nonzero 32-bit mark (e.g. 0x1)", s)
	}
	return uint32(v), ""
})

var logLevel = field(func(c *Config) *string { return &c.LogLevel }, func(n *yaml.Node) (string, string) {
	s, msg := scalar(n)
	if msg != "" {
		return "", msg
	}
	switch s {
	case "debug", "info", "warn", "error":
		return s, ""
	}
	return "", fmt.Sprintf("%q is not a level (debug, info, warn or error)", s)
})

// listenAddr reads metrics.listen: empty (off) or host:port.
var listenAddr = field(func(c *Config) *string { return &c.MetricsListen }, func(n *yaml.Node) (string, string) {
	s, msg := scalar(n)
	if msg != "" {
		return "", msg
	}
	if isNull(n) || s == "" {
		return "", ""
	}
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Sprintf("%q is not host:port (e.g. 127.0.0.1:9466; empty turns metrics off)", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", fmt.Sprintf("%q: port %q is not a port number 1-65535", s, port)
	}
	return s, ""
})

// socketPath reads control.socket: an absolute path, or empty (no
// control socket).
var socketPath = field(func(c *Config) *string { return &c.ControlSocket }, func(n *yaml.Node) (string, string) {
	s, msg := scalar(n)
	if msg != "" {
		return "", msg
	}
	if isNull(n) {
		s = ""
	}
	if s != "" && !filepath.IsAbs(s) {
		return "", fmt.Sprintf("%q is not an absolute path (empty turns the control socket off)", s)
	}
	if len(s) > 107 {
		return "", fmt.Sprintf("%q is longer than a unix socket path may be (107 bytes)", s)
	}
	return s, ""
})

// protocols reads knock.protocols: a list of the knock wire versions
// accepted, 1 and 2 (gate.ParseProtocols).
var protocols = field(func(c *Config) *[]int { return &c.KnockProtocols }, func(n *yaml.Node) ([]int, string) {
	if n.Kind != yaml.SequenceNode {
		return nil, "must be a list such as [1, 2]"
	}
	items := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		s, msg := scalar(item)
		if msg != "" {
			return nil, msg
		}
		items = append(items, s)
	}
	versions, err := gate.ParseProtocols(items)
	if err != nil {
		return nil, err.Error()
	}
	return versions, ""
})

// crlStale reads crl.stale: warn (keep applying a CRL past its next
// update, and say so) or refuse (refuse every knock until a fresh CRL
// arrives).
var crlStale = field(func(c *Config) *bool { return &c.CRLStaleRefuse }, func(n *yaml.Node) (bool, string) {
	s, msg := scalar(n)
	if msg != "" {
		return false, msg
	}
	switch s {
	case "warn":
		return false, ""
	case "refuse":
		return true, ""
	}
	return false, fmt.Sprintf("%q is not a stale-CRL policy (warn or refuse)", s)
})

// crlExtra reads crl.extra: a list of {file: PATH, url: URL} mappings,
// each the CRL of one more CA.
var crlExtra = field(func(c *Config) *[]CRLSource { return &c.CRLExtra }, func(n *yaml.Node) ([]CRLSource, string) {
	if isNull(n) {
		return nil, ""
	}
	if n.Kind != yaml.SequenceNode {
		return nil, "must be a list of {file: PATH, url: URL} (url optional), one per further CA"
	}
	var out []CRLSource
	for i, item := range n.Content {
		src := CRLSource{Key: "crl.extra[" + strconv.Itoa(i) + "]"}
		if item.Kind != yaml.MappingNode {
			return nil, fmt.Sprintf("item %d must be a mapping {file: PATH, url: URL}", i)
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			k, v := item.Content[j], item.Content[j+1]
			val, msg := scalar(v)
			if msg != "" {
				return nil, fmt.Sprintf("item %d: %s: %s", i, k.Value, msg)
			}
			switch k.Value {
			case "file":
				src.File = val
			case "url":
				src.URL = val
			default:
				return nil, fmt.Sprintf("item %d: unknown key %q (want file, url)", i, k.Value)
			}
		}
		out = append(out, src)
	}
	return out, ""
})
