package gate

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the size of a transparent huge page with 4 KiB pages.
const hugePage = 2 << 20

// residentSlice returns n zero T's in memory of their own, mapped
// anonymously, aligned to huge pages and advised to use them (one TLB
// entry for 2 MiB instead of 512), and written once so that every page
// is present: a first touch on the packet path would stall it on the
// page fault. free unmaps it. T must hold no pointers (the garbage
// collector does not look in this memory). Where the mapping fails it
// returns a slice of the heap, and a free that does nothing.
func residentSlice[T any](n int) (s []T, free func()) {
	size := int(unsafe.Sizeof(*new(T))) * n
	if size == 0 {
		return make([]T, n), func() {}
	}
	size = (size + hugePage - 1) &^ (hugePage - 1)
	m, err := unix.Mmap(-1, 0, size+hugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return make([]T, n), func() {}
	}
	off := -int(uintptr(unsafe.Pointer(&m[0]))) & (hugePage - 1)
	b := m[off : off+size]
	_ = unix.Madvise(b, unix.MADV_HUGEPAGE) // without huge pages (EINVAL), small ones
	for i := 0; i < len(b); i += 4096 {
		b[i] = 0
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n), func() { _ = unix.Munmap(m) }
}
