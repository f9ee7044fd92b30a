package rules

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
)

// restoreTimeout bounds one iptables-restore run, lock wait included.
const restoreTimeout = 30 * time.Second

// systemTables is the host's iptables or ip6tables: go-iptables for the
// single commands, iptables-restore for the atomic replacement.
type systemTables struct {
	*iptables.IPTables
	restore string // the path of iptables-restore or ip6tables-restore
	save    string // the path of iptables-save or ip6tables-save
}

var _ IPTables = systemTables{}

// Restore runs iptables-restore --noflush with input, waiting up to 5 s
// for the xtables lock (legacy backend; nft ignores it).
func (s systemTables) Restore(input string) error {
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.restore, "-w", "5", "--noflush")
	cmd.Stdin = strings.NewReader(input)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", s.restore, err, bytes.TrimSpace(out))
	}
	return nil
}

// Save runs iptables-save -t table.
func (s systemTables) Save(table string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, s.save, "-t", table)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", s.save, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return string(out), nil
}

// newSystemTables returns the handle of one family, with the paths of its
// restore and save commands.
func newSystemTables(proto iptables.Protocol) (systemTables, error) {
	cmd := family(proto == iptables.ProtocolIPv6)
	h, err := iptables.New(iptables.IPFamily(proto))
	if err != nil {
		return systemTables{}, fmt.Errorf("%s: %w", cmd, err)
	}
	restore, err := exec.LookPath(cmd + "-restore")
	if err != nil {
		return systemTables{}, fmt.Errorf("%s-restore: %w", cmd, err)
	}
	save, err := exec.LookPath(cmd + "-save")
	if err != nil {
		return systemTables{}, fmt.Errorf("%s-save: %w", cmd, err)
	}
	return systemTables{h, restore, save}, nil
}

// handles returns the system's iptables handles; v6 is nil when the
// kernel has no IPv6. A kernel with IPv6 but no working ip6tables is an
// error: the ports would be hidden over IPv4 only.
func handles() (v4, v6 IPTables, err error) {
	h4, err := newSystemTables(iptables.ProtocolIPv4)
	if err != nil {
		return nil, nil, err
	}
	if !IPv6Enabled() {
		return h4, nil, nil
	}
	h6, err := newSystemTables(iptables.ProtocolIPv6)
	if err != nil {
		return nil, nil, fmt.Errorf("the kernel has IPv6, so its rules are needed too: %w", err)
	}
	return h4, h6, nil
}

// usesNFTables reports whether the iptables command drives nf_tables
// (iptables-nft) rather than the legacy x_tables.
func usesNFTables() bool {
	out, err := exec.Command("iptables", "--version").Output()
	return err == nil && bytes.Contains(out, []byte("nf_tables"))
}
