package journal

import (
	"fmt"
	"os"
	"syscall"
)

// connected reports whether f is the stream JOURNAL_STREAM names
// ("DEVICE:INODE", as systemd sets it for a unit's stdout and stderr).
func connected(journalStream string, f *os.File) bool {
	if journalStream == "" {
		return false
	}
	var dev, ino uint64
	if n, _ := fmt.Sscanf(journalStream, "%d:%d", &dev, &ino); n != 2 {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}
