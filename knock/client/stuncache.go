package client

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The address cache keeps the public address learnt from the address
// echo (authenticated answers only: STUN's are never kept) for one local
// address and one endpoint ("per network": a laptop that moves gets a new
// local address, or the entry expires) for DefaultSTUNCacheTTL, in the
// user's cache directory ($XDG_CACHE_HOME/sknock/address.json on Linux;
// the stun.json of earlier versions, which could hold forged answers, is
// not read). Losing it costs one round trip; it is never an error.

// stunCacheEntry is one remembered answer.
type stunCacheEntry struct {
	Addr string `json:"addr"`
	At   int64  `json:"at"` // Unix seconds
}

// stunCachePath is the cache file, or "" when the user has no cache
// directory.
func stunCachePath() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "sknock", "address.json")
}

func cacheKey(local netip.Addr, servers []string) string {
	return local.String() + " " + strings.Join(servers, ",")
}

func loadSTUNCache(path string) map[string]stunCacheEntry {
	m := map[string]stunCacheEntry{}
	data, err := os.ReadFile(path)
	if err == nil {
		json.Unmarshal(data, &m)
	}
	return m
}

// readSTUNCache returns the address remembered for key, if it is younger
// than DefaultSTUNCacheTTL at now.
func readSTUNCache(key string, now time.Time) (netip.Addr, bool) {
	path := stunCachePath()
	if path == "" {
		return netip.Addr{}, false
	}
	e, ok := loadSTUNCache(path)[key]
	if !ok {
		return netip.Addr{}, false
	}
	at := time.Unix(e.At, 0)
	if now.Before(at) || now.Sub(at) >= DefaultSTUNCacheTTL {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(e.Addr)
	return a, err == nil
}

// writeSTUNCache remembers addr for key, dropping expired entries.
func writeSTUNCache(key string, addr netip.Addr, now time.Time) {
	path := stunCachePath()
	if path == "" {
		return
	}
	m := loadSTUNCache(path)
	for k, e := range m {
		if now.Sub(time.Unix(e.At, 0)) >= DefaultSTUNCacheTTL {
			delete(m, k)
		}
	}
	m[key] = stunCacheEntry{Addr: addr.String(), At: now.Unix()}
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return
	}
	tmp := path + ".tmp" + time.Now().Format("150405.000000000")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return
	}
	if os.Rename(tmp, path) != nil {
		os.Remove(tmp)
	}
}

// isRefused reports whether err is a connection refused by a reset.
func isRefused(err error) bool { return err != nil && errors.Is(err, syscall.ECONNREFUSED) }
