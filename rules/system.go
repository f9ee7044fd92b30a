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
	restore string // "iptables-restore" or "ip6tables-restore"
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

// handles returns the system's iptables handles; v6 is nil when the
// kernel has no IPv6. A kernel with IPv6 but no working ip6tables is an
// error: the ports would be hidden over IPv4 only.
func handles() (v4, v6 IPTables, err error) {
	h4, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv4))
	if err != nil {
		return nil, nil, fmt.Errorf("iptables: %w", err)
	}
	r4, err := exec.LookPath("iptables-restore")
	if err != nil {
		return nil, nil, fmt.Errorf("iptables-restore: %w", err)
	}
	v4 = systemTables{h4, r4}
	if !IPv6Enabled() {
		return v4, nil, nil
	}
	h6, err := iptables.New(iptables.IPFamily(iptables.ProtocolIPv6))
	if err != nil {
		return nil, nil, fmt.Errorf("ip6tables (the kernel has IPv6, so its rules are needed too): %w", err)
	}
	r6, err := exec.LookPath("ip6tables-restore")
	if err != nil {
		return nil, nil, fmt.Errorf("ip6tables-restore (the kernel has IPv6, so its rules are needed too): %w", err)
	}
	return v4, systemTables{h6, r6}, nil
}
