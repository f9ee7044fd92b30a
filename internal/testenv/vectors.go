package testenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// VectorsEnv names the variable that points the tests at the interop
// vectors directory when it is not ../shared/vectors beside the module.
const VectorsEnv = "SKNOCK_VECTORS"

// FindVectors returns the interop vectors directory (server.pfx, ca.pem,
// knock-*.bin, ...): $SKNOCK_VECTORS when set, otherwise shared/vectors
// beside the module root (the directory holding go.mod above the working
// directory), so /x/shared/vectors for a clone at /x/main. A linked git
// worktree also looks beside its main checkout. It is for helpers that
// have no testing.TB at hand; tests call VectorsDir.
func FindVectors() (string, error) {
	if dir := os.Getenv(VectorsEnv); dir != "" {
		if !isDir(dir) {
			return "", fmt.Errorf("%s=%s is not a directory", VectorsEnv, dir)
		}
		return filepath.Abs(dir)
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	tried := []string{filepath.Join(filepath.Dir(root), "shared", "vectors")}
	if main := mainCheckout(root); main != "" && main != root {
		tried = append(tried, filepath.Join(filepath.Dir(main), "shared", "vectors"))
	}
	for _, dir := range tried {
		if isDir(dir) {
			return dir, nil
		}
	}
	return "", fmt.Errorf("no directory %s (set %s)", strings.Join(tried, " or "), VectorsEnv)
}

// VectorsDir returns the interop vectors directory (see FindVectors). When
// there is none it skips t, or fails it under SKNOCK_E2E=1, like Require,
// saying where it looked.
func VectorsDir(t testing.TB) string {
	t.Helper()
	dir, err := FindVectors()
	Require(t, err == nil, fmt.Sprintf("interop vectors not found: %v", err))
	return dir
}

// moduleRoot walks up from the working directory (a test's package
// directory) to the directory holding go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("find module root: %w", err)
		}
		if dir == filepath.Dir(dir) {
			return "", fmt.Errorf("find module root: no go.mod above %s", wd)
		}
	}
}

// mainCheckout returns the main working tree of the linked git worktree
// at root (whose .git is a file "gitdir: MAIN/.git/worktrees/NAME"), or ""
// when root is not one.
func mainCheckout(root string) string {
	data, err := os.ReadFile(filepath.Join(root, ".git"))
	if err != nil {
		return "" // a directory (a main checkout) or no git at all
	}
	gitdir, ok := strings.CutPrefix(strings.TrimSpace(string(data)), "gitdir: ")
	if !ok {
		return ""
	}
	if !filepath.IsAbs(gitdir) {
		gitdir = filepath.Join(root, gitdir)
	}
	common, err := os.ReadFile(filepath.Join(gitdir, "commondir"))
	if err != nil {
		return ""
	}
	dir := strings.TrimSpace(string(common))
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(gitdir, dir)
	}
	return filepath.Dir(filepath.Clean(dir))
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}
