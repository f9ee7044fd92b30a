package journal

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestConnected(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stream"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Skip("no fstat here:", err)
	}
	self := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	other := fmt.Sprintf("%d:%d", st.Dev, st.Ino+1)
	for give, want := range map[string]bool{self: true, other: false, "": false, "garbage": false} {
		if got := connected(give, f); got != want {
			t.Errorf("connected(%q) = %v, want %v", give, got, want)
		}
	}
}
