package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDirPrefix names the temporary directories BuildBinaries builds into.
// They outlive the test process (there is no TestMain to remove them), so
// BuildBinaries removes ones older than staleBinDir left by earlier runs.
const (
	binDirPrefix = "sknock-e2e-bin-"
	staleBinDir  = time.Hour
)

var build struct {
	once            sync.Once
	sknockd, sknock string
	err             error
}

// BuildBinaries builds cmd/sknockd and cmd/sknock once per test process
// and returns their paths. It fails t when the build fails.
func BuildBinaries(t testing.TB) (sknockd, sknock string) {
	t.Helper()
	build.once.Do(func() {
		build.sknockd, build.sknock, build.err = buildBinaries()
	})
	if build.err != nil {
		t.Fatalf("build binaries: %v", build.err)
	}
	return build.sknockd, build.sknock
}

func buildBinaries() (sknockd, sknock string, err error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", "", err
	}
	removeStaleBinDirs()
	dir, err := os.MkdirTemp("", binDirPrefix)
	if err != nil {
		return "", "", err
	}
	sknockd, sknock = filepath.Join(dir, "sknockd"), filepath.Join(dir, "sknock")
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/sknockd", "./cmd/sknock")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build in %s: %v\n%s", root, err, out)
	}
	return sknockd, sknock, nil
}

func removeStaleBinDirs() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), binDirPrefix+"*"))
	for _, dir := range old {
		if fi, err := os.Stat(dir); err == nil && time.Since(fi.ModTime()) > staleBinDir {
			os.RemoveAll(dir)
		}
	}
}

// ModuleRoot returns the directory holding go.mod, found by walking up
// from the working directory (a test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(strings.TrimSpace(string(data)), "module sknock") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module sknock above the working directory")
		}
		dir = parent
	}
}
