//go:build !linux

package client

import (
	"errors"
	"time"
)

// noKeyring is the key cache where there is no kernel keyring: every
// lookup misses, so every knock decrypts the bundle.
type noKeyring struct{}

// defaultKeyring is the keyring Load uses.
var defaultKeyring keyring = noKeyring{}

func (noKeyring) get(string) ([]byte, bool) { return nil, false }

func (noKeyring) put(string, []byte, time.Duration) error {
	return errors.New("key cache: no kernel keyring on this system")
}

// KeyCacheSupported reports whether Config.KeyCache can keep a key here:
// only Linux has the kernel keyring it uses; elsewhere every Load unlocks
// the bundle.
const KeyCacheSupported = false
