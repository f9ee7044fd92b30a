package client

import (
	"fmt"
	"math"
	"time"

	"golang.org/x/sys/unix"
)

// Key permission bits (linux/keyctl.h): the possessor may do anything; the
// user (any process of the same uid) may find and read the entry; group
// and others nothing.
const (
	keyPosAll    = 0x3f000000
	keyUsrView   = 0x00010000
	keyUsrRead   = 0x00020000
	keyUsrSearch = 0x00080000
	keyCachePerm = keyPosAll | keyUsrView | keyUsrRead | keyUsrSearch
)

// kernelKeyring keeps cache entries as "user" keys in the per-user
// keyring (@u), which lives as long as the user has processes; each entry
// also expires on its own.
type kernelKeyring struct{}

// defaultKeyring is the keyring Load uses.
var defaultKeyring keyring = kernelKeyring{}

func (kernelKeyring) get(desc string) ([]byte, bool) {
	id, err := unix.KeyctlSearch(unix.KEY_SPEC_USER_KEYRING, "user", desc, 0)
	if err != nil {
		return nil, false
	}
	buf := make([]byte, 4096)
	for {
		n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, id, buf, 0)
		if err != nil {
			return nil, false
		}
		if n <= len(buf) {
			return buf[:n], true
		}
		buf = make([]byte, n)
	}
}

// put adds the key to this process's keyring first, sets its permissions
// and timeout there, and only then links it into @u: a process killed
// half-way leaves no entry without an expiry behind.
func (kernelKeyring) put(desc string, payload []byte, ttl time.Duration) error {
	// The kernel takes an unsigned 32-bit timeout in which 0 means never:
	// clamp, so that no ttl becomes an entry without expiry.
	secs := int(min(max((ttl+time.Second-1)/time.Second, 1), math.MaxInt32))
	id, err := unix.AddKey("user", desc, payload, unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		return fmt.Errorf("key cache: add key: %w", err)
	}
	if err := unix.KeyctlSetperm(id, keyCachePerm); err != nil {
		return fmt.Errorf("key cache: set permissions: %w", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_SET_TIMEOUT, id, secs, 0, 0); err != nil {
		return fmt.Errorf("key cache: set timeout: %w", err)
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_LINK, id, unix.KEY_SPEC_USER_KEYRING, 0, 0); err != nil {
		return fmt.Errorf("key cache: link into the user keyring: %w", err)
	}
	unix.KeyctlInt(unix.KEYCTL_UNLINK, id, unix.KEY_SPEC_PROCESS_KEYRING, 0, 0)
	return nil
}

// KeyCacheSupported reports whether Config.KeyCache can keep a key here:
// only Linux has the kernel keyring it uses; elsewhere every Load unlocks
// the bundle.
const KeyCacheSupported = true
