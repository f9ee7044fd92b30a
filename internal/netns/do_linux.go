//go:build linux

package netns

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread switched into the namespace and returns f's
// error. Sockets f creates belong to the namespace for their whole life,
// so f typically opens listeners or connections that the caller then uses
// from any goroutine. f runs on its own goroutine: it must not call
// t.Fatal (return an error instead) and must not start goroutines that
// expect to be inside the namespace (new threads start in the original
// one).
//
// If the thread cannot be switched back, it is left locked, and the Go
// runtime ends it with its goroutine, so no other code ever runs in the
// wrong namespace.
func (n *NS) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		err, restored := n.doLocked(f)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked switches the locked thread into n, runs f and switches back;
// restored reports whether the thread is in its original namespace again.
func (n *NS) doLocked(f func() error) (err error, restored bool) {
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		return fmt.Errorf("netns %s: open current namespace: %w", n.Name, err), true
	}
	defer orig.Close()
	target, err := os.Open(n.Path())
	if err != nil {
		return fmt.Errorf("netns %s: %w", n.Name, err), true
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("netns %s: setns: %w", n.Name, err), true
	}
	ferr := f()
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if ferr == nil {
			ferr = fmt.Errorf("netns %s: switch back: %w", n.Name, err)
		}
		return ferr, false
	}
	return ferr, true
}
