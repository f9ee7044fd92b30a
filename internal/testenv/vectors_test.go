package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFindVectorsOverride(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(VectorsEnv, dir)
	got, err := FindVectors()
	if err != nil || got != dir {
		t.Errorf("FindVectors() = %q, %v; want %q", got, err, dir)
	}
	t.Setenv(VectorsEnv, filepath.Join(dir, "missing"))
	if got, err := FindVectors(); err == nil {
		t.Errorf("FindVectors() with a missing %s = %q, want an error", VectorsEnv, got)
	}
}

func TestFindVectorsBesideModule(t *testing.T) {
	t.Setenv(VectorsEnv, "")
	root := t.TempDir()
	vectors := filepath.Join(root, "shared", "vectors")
	pkg := filepath.Join(root, "main", "a", "b")
	for _, d := range []string{vectors, pkg} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "main", "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)
	got, err := FindVectors()
	if err != nil || got != vectors {
		t.Errorf("FindVectors() from %s = %q, %v; want %q", pkg, got, err, vectors)
	}
	if err := os.RemoveAll(filepath.Join(root, "shared")); err != nil {
		t.Fatal(err)
	}
	if got, err := FindVectors(); err == nil {
		t.Errorf("FindVectors() without vectors = %q, want an error", got)
	}
}

func TestFindVectorsBesideMainWorktree(t *testing.T) {
	t.Setenv(VectorsEnv, "")
	root := t.TempDir()
	vectors := filepath.Join(root, "shared", "vectors")
	gitdir := filepath.Join(root, "main", ".git", "worktrees", "wt")
	wt := filepath.Join(root, "elsewhere", "wt")
	for _, d := range []string{vectors, gitdir, filepath.Join(wt, "pkg")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for path, body := range map[string]string{
		filepath.Join(wt, "go.mod"):           "module x\n",
		filepath.Join(wt, ".git"):             "gitdir: " + gitdir + "\n",
		filepath.Join(gitdir, "commondir"):    "../..\n",
		filepath.Join(root, "main", "go.mod"): "module x\n",
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(filepath.Join(wt, "pkg"))
	got, err := FindVectors()
	if err != nil || got != vectors {
		t.Errorf("FindVectors() from a linked worktree = %q, %v; want %q", got, err, vectors)
	}
}
