package rules

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// procConf is where the kernel shows each address family's per-interface
// settings for the network namespace of the reader.
const procConf = "/proc/sys/net"

// HostForwards reports whether this network namespace forwards packets:
// IPv4 or IPv6 forwarding on for any interface ("all" read first), or
// IPv6's per-interface force_forwarding. A setting that cannot be read
// counts as on, which costs only speed (Config.Labels); a kernel without
// IPv6 has no IPv6 settings to read.
func HostForwards() bool { return forwardsUnder(procConf) }

// forwardsUnder is HostForwards over the tree at root (/proc/sys/net).
func forwardsUnder(root string) bool {
	for _, fam := range []string{"ipv4", "ipv6"} {
		dir := filepath.Join(root, fam, "conf")
		entries, err := os.ReadDir(dir)
		if err != nil {
			if fam == "ipv6" && errors.Is(err, fs.ErrNotExist) {
				continue // ipv6.disable=1
			}
			return true
		}
		names := []string{"all"}
		for _, e := range entries {
			if e.Name() != "all" && e.Name() != "default" {
				names = append(names, e.Name())
			}
		}
		for _, name := range names {
			for _, setting := range []string{"forwarding", "force_forwarding"} {
				b, err := os.ReadFile(filepath.Join(dir, name, setting))
				switch {
				case errors.Is(err, fs.ErrNotExist):
					// force_forwarding is IPv6's, and new (Linux 6.17);
					// an interface may go between the listing and the read.
				case err != nil:
					return true
				case strings.TrimSpace(string(b)) != "0":
					return true
				}
			}
		}
	}
	return false
}
