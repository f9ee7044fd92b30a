// Package config reads sknockd's configuration file: one table of keys
// (keys.go) says how each is parsed, compared on a reload, whether a
// reload may change it, and what the README says of it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"sknock/gate"
	"sknock/internal/control"
	"sknock/internal/yamlsyntax"
	"sknock/rules"
)

// Config is the daemon's configuration after parsing and checking: every
// value is in range, but no file named in it has been read yet.
type Config struct {
	Path string

	ServerPKCS12       string
	ServerPasswordFile string
	ServerPasswordEnv  string
	ServerCA           string

	CRLFile    string
	CRLURL     string
	CRLRefresh time.Duration
	// CRLExtra are the CRLs of further CAs, one per CA (crl.extra).
	CRLExtra []CRLSource
	// CRLStaleRefuse refuses every knock while a CRL is past its next
	// update (crl.stale: refuse); false keeps applying it, with warnings.
	CRLStaleRefuse bool
	// CRLRequired refuses a configuration in which a CA has no CRL.
	CRLRequired bool

	KnockTolerance time.Duration
	KnockWorkers   int
	KnockBacklog   int
	// KnockProtocols are the wire versions accepted (knock.protocols);
	// nil: 1 and 2.
	KnockProtocols []int
	// ReplayFile keeps the replay memory across restarts;
	// empty: not kept, and a restart refuses knocks sealed before it.
	ReplayFile string

	Policy       gate.Policy
	OpenDuration time.Duration
	MaxGrants    int
	// MaxGrantsPerCert bounds one certificate's live grants; 0: no bound.
	MaxGrantsPerCert int
	// HoldQueue is the NFQUEUE the gate moves a SYN racing its own knock
	// to; default: the queue after the gate queues.
	HoldQueue uint16

	LogLevel string

	// MetricsListen is the address the Prometheus listener binds
	// (host:port); empty: no listener.
	MetricsListen string
	// ControlSocket is the path of the root-only control socket that
	// `sknock grants` and `sknock status` talk to; empty: none.
	ControlSocket string

	// Rules is the rule set the config describes.
	Rules rules.Config

	// set holds the line of each key ("section.key") and section the file
	// gave; a key it did not give is absent (zero).
	set map[string]int
}

// ConfigError is a configuration problem, naming the key (and line) it is
// about.
type ConfigError struct {
	Path string
	Key  string
	Line int
	Msg  string
}

// Error names the file, the line when known, and the key.
func (e *ConfigError) Error() string {
	loc := e.Path
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.Path, e.Line)
	}
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", loc, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Default is the configuration before the file applies: every
// default, and nothing protected (gate.protect has no default; ParseConfig
// refuses a file that leaves it out).
func Default() Config {
	return Config{
		ServerPKCS12:       "/etc/sknock/server.pfx",
		ServerPasswordFile: "/etc/sknock/server.pass",
		CRLRefresh:         30 * time.Minute,
		KnockTolerance:     7 * time.Second,
		ReplayFile:         "/var/lib/sknock/replay",
		Policy:             gate.PolicyDrop,
		OpenDuration:       15 * time.Second,
		MaxGrantsPerCert:   defaultMaxGrantsPerCert,
		LogLevel:           "info",
		ControlSocket:      control.DefaultSocket,
		Rules:              defaultRules(),
	}
}

// defaultMaxGrantsPerCert is gate.max_grants_per_certificate's default:
// far more live grants than one person's certificate needs (4096 grants
// of 15 s is 270 knocks a second), far fewer than the table holds.
const defaultMaxGrantsPerCert = 4096

// defaultRules are rules.DefaultConfig plus a per-source knock rate
// limit: a knock costs an ECDH, so one flooding source must not be able to
// crowd everyone else out of the knock backlog. A client sends one knock
// per port it opens, so 20 a second is generous.
func defaultRules() rules.Config {
	r := rules.DefaultConfig()
	r.KnockRateLimit = "20/second"
	return r
}

// LoadConfig reads and checks the file at path. The error names the key.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

// ParseConfig parses a configuration file's contents; path is only used in
// messages.
func ParseConfig(path string, data []byte) (Config, error) {
	c := Default()
	c.Path = path
	doc, err := decodeOne(path, data)
	if err != nil {
		return c, err
	}
	if len(doc.Content) > 0 {
		root := doc.Content[0]
		if root.Kind != yaml.MappingNode {
			return c, &ConfigError{Path: path, Line: root.Line, Msg: "the top level must be a mapping of sections"}
		}
		if err := c.read(root); err != nil {
			return c, err
		}
	}
	c.Rules.RejectStray = c.Policy == gate.PolicyReject
	// Knock ports are no service: under reject and under none (audit) they
	// answer as a closed port, whatever a datagram holds.
	c.Rules.RejectKnocks = c.Policy != gate.PolicyDrop
	if err := c.checkProtect(); err != nil {
		return c, err
	}
	if err := c.Rules.Validate(); err != nil {
		return c, c.rulesError(err)
	}
	if err := c.checkHoldQueue(); err != nil {
		return c, err
	}
	if c.ServerPKCS12 == "" {
		return c, &ConfigError{Path: path, Key: "server.pkcs12", Msg: "required"}
	}
	if c.ServerPasswordEnv != "" && c.set["server.password_file"] == 0 {
		// password_env alone replaces the default password file.
		c.ServerPasswordFile = ""
	}
	if c.ServerPasswordFile != "" && c.ServerPasswordEnv != "" {
		return c, &ConfigError{Path: path, Key: "server.password_env", Msg: "set either server.password_file or server.password_env, not both"}
	}
	if err := c.checkCRL(); err != nil {
		return c, err
	}
	return c, nil
}

// decodeOne decodes the file's one YAML document. A second document
// (after a "---") is refused rather than ignored: whatever it says would
// silently not apply.
func decodeOne(path string, data []byte) (yaml.Node, error) {
	notYAML := func(err error) error {
		// yaml.v3 may blame a block's first line; the second reading
		// names the line at fault.
		if at := yamlsyntax.Locate(data); at != nil {
			return &ConfigError{Path: path, Line: at.Line, Msg: fmt.Sprintf("not valid YAML: column %d: %s", at.Column, at.Msg)}
		}
		return &ConfigError{Path: path, Msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	var doc, next yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return doc, nil
	} else if err != nil {
		return doc, notYAML(err)
	}
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
		return doc, nil
	case err != nil:
		return doc, notYAML(err)
	}
	return doc, &ConfigError{Path: path, Line: next.Line, Msg: "a second YAML document (after ---); the file must hold exactly one"}
}

// read applies the file's sections to c, key by key, through the key
// table.
func (c *Config) read(root *yaml.Node) error {
	c.set = map[string]int{}
	seen := map[string]bool{}
	known := sections()
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if !slices.Contains(known, k.Value) {
			want := strings.Join(known[:len(known)-1], ", ") + " or " + known[len(known)-1]
			return &ConfigError{Path: c.Path, Key: k.Value, Line: k.Line, Msg: "unknown section (want " + want + ")"}
		}
		if seen[k.Value] {
			return &ConfigError{Path: c.Path, Key: k.Value, Line: k.Line, Msg: "section given twice"}
		}
		seen[k.Value] = true
		c.set[k.Value] = k.Line
		if isNull(v) {
			continue
		}
		if v.Kind != yaml.MappingNode {
			return &ConfigError{Path: c.Path, Key: k.Value, Line: v.Line, Msg: "must be a mapping"}
		}
		seenKey := map[string]bool{}
		for j := 0; j+1 < len(v.Content); j += 2 {
			kk, vv := v.Content[j], v.Content[j+1]
			name := k.Value + "." + kk.Value
			key := byName(name)
			if key == nil {
				return &ConfigError{Path: c.Path, Key: name, Line: kk.Line, Msg: "unknown key"}
			}
			if seenKey[kk.Value] {
				return &ConfigError{Path: c.Path, Key: name, Line: kk.Line, Msg: "key given twice"}
			}
			seenKey[kk.Value] = true
			if msg := key.set(c, vv); msg != "" {
				return &ConfigError{Path: c.Path, Key: name, Line: vv.Line, Msg: msg}
			}
			c.set[name] = kk.Line
		}
	}
	return nil
}

// checkHoldQueue fills in the default hold queue (the one after the gate
// queues) and checks that it is none of the other queues.
func (c *Config) checkHoldQueue() error {
	gates := c.Rules.GateQueueNumbers()
	if c.set["gate.hold_queue"] == 0 {
		next := int(gates[len(gates)-1]) + 1
		if next == int(c.Rules.KnockQueue) {
			next++
		}
		if next > 65535 {
			return &ConfigError{Path: c.Path, Key: "gate.hold_queue", Msg: "no queue number left after the gate queues; set one"}
		}
		c.HoldQueue = uint16(next)
		return nil
	}
	if c.HoldQueue == c.Rules.KnockQueue || slices.Contains(gates, c.HoldQueue) {
		return &ConfigError{Path: c.Path, Key: "gate.hold_queue", Msg: fmt.Sprintf("%d is already the knock queue or a gate queue", c.HoldQueue)}
	}
	return nil
}

// checkProtect refuses a configuration without gate.protect, or with an
// empty one: it would hide nothing while the daemon runs as if it did.
// There is no default, so that no demo ports get protected by accident.
func (c *Config) checkProtect() error {
	if len(c.Rules.Protect) > 0 {
		return nil
	}
	if line := c.set["gate.protect"]; line > 0 {
		return &ConfigError{Path: c.Path, Key: "gate.protect", Line: line, Msg: "empty: it would protect nothing; list the ports to hide, e.g. [tcp/2000]"}
	}
	// Missing: point at the gate section when there is one.
	return &ConfigError{Path: c.Path, Key: "gate.protect", Line: c.set["gate"], Msg: "required: list the ports to hide, e.g. [tcp/2000] (there is no default)"}
}

// rulesError turns a rules validation error into one naming the key, and
// its line when the file gave the key.
func (c *Config) rulesError(err error) error {
	var ce *rules.ConfigError
	if !errors.As(err, &ce) {
		return &ConfigError{Path: c.Path, Msg: err.Error()}
	}
	key := rulesKey(ce.Field)
	return &ConfigError{Path: c.Path, Key: key, Line: c.set[key], Msg: ce.Value + ": " + ce.Reason}
}

// rulesKey names the config key behind a rules.Config field.
func rulesKey(field string) string {
	switch field {
	case "Chain":
		return "gate.chain"
	case "Mark":
		return "gate.reject_mark"
	case "RevokeMark":
		return "gate.revoke_mark"
	case "GateQueue":
		return "gate.queue"
	case "GateQueues":
		return "gate.queues"
	case "KnockQueue":
		return "knock.queue"
	case "KnockFirst", "KnockLast":
		return "knock.ports"
	case "MinLength":
		return "knock.min_length"
	case "AlwaysAllow":
		return "gate.always_allow"
	case "Protect":
		return "gate.protect"
	case "KnockRateLimit":
		return "knock.rate_limit"
	}
	return field
}

// ProtectList writes gate.protect as the log lines show it: "tcp/2000,udp/8000".
func (c *Config) ProtectList() string {
	if len(c.Rules.Protect) == 0 {
		return "nothing"
	}
	s := ""
	for i, p := range c.Rules.Protect {
		if i > 0 {
			s += ","
		}
		s += p.String()
	}
	return s
}
