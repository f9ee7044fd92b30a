package daemon

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// instanceSocket is the abstract Unix socket one sknockd holds in its
// network namespace. Abstract sockets are scoped to the namespace and
// freed by the kernel when the holder dies, even by kill -9, so a stale
// lock cannot outlive its process.
const instanceSocket = "@sknockd"

// lockInstance makes sure only one sknockd runs in this network
// namespace: two would fight over the first places in PREROUTING, INPUT
// and FORWARD, and one's
// rules could uncover the other's ports. The error names the running
// instance.
func lockInstance() (io.Closer, error) { return lockInstanceAt(instanceSocket) }

// lockInstanceAt is lockInstance with the socket's name given.
func lockInstanceAt(name string) (io.Closer, error) {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("another sknockd is already running in this network namespace (%s); one sknockd serves a namespace and owns its chain and queues: stop it first, or edit its configuration and send it SIGHUP", runningInstance(name))
	}
	if err != nil {
		return nil, fmt.Errorf("single-instance lock %s: %w", name, err)
	}
	// Accept and close at once, so that asking who holds the lock never
	// fills the listen backlog.
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l, nil
}

// runningInstance describes the process holding the lock socket name: its
// pid (from the socket's peer credentials) and command line.
func runningInstance(name string) string {
	c, err := net.DialTimeout("unix", name, time.Second)
	if err != nil {
		return "pid unknown: " + err.Error()
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return "pid unknown: " + err.Error()
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return fmt.Sprintf("pid unknown: %v", errors.Join(err, credErr))
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cred.Pid))
	if err != nil || len(cmdline) == 0 {
		return fmt.Sprintf("pid %d", cred.Pid)
	}
	return fmt.Sprintf("pid %d: %s", cred.Pid, strings.TrimSpace(strings.ReplaceAll(string(cmdline), "\x00", " ")))
}
