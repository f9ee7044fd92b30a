package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// startConnect begins a TCP connection to addr with a non-blocking
// connect, which returns once the kernel has sent the SYN: the knock sent
// after it cannot overtake it. The outcome arrives on the channel; ctx
// ends the attempt.
func startConnect(ctx context.Context, addr netip.AddrPort) <-chan dialResult {
	out := make(chan dialResult, 1)
	fail := func(err error) <-chan dialResult {
		out <- dialResult{err: fmt.Errorf("connect %s: %w", addr, err)}
		return out
	}
	family := syscall.AF_INET6
	var sa syscall.Sockaddr = &syscall.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	if ip := addr.Addr().Unmap(); ip.Is4() {
		family = syscall.AF_INET
		sa = &syscall.SockaddrInet4{Port: int(addr.Port()), Addr: ip.As4()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	if err := syscall.Connect(fd, sa); err != nil && !errors.Is(err, syscall.EINPROGRESS) {
		syscall.Close(fd)
		return fail(err)
	}
	f := os.NewFile(uintptr(fd), "connect "+addr.String()) // non-blocking: the runtime polls it
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return fail(err)
	}
	go func() {
		defer f.Close()
		stop := context.AfterFunc(ctx, func() { f.SetWriteDeadline(time.Now()) })
		defer stop()
		var connectErr error
		err := rc.Write(func(fd uintptr) bool {
			n, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_ERROR)
			switch {
			case err != nil:
				connectErr = err
			case n != 0:
				connectErr = syscall.Errno(n)
			default:
				if _, err := syscall.Getpeername(int(fd)); err != nil {
					return false // still connecting: wait until writable
				}
			}
			return true
		})
		if err == nil {
			err = connectErr
		}
		if err != nil {
			out <- dialResult{err: fmt.Errorf("connect %s: %w", addr, err)}
			return
		}
		at := time.Now()
		conn, err := net.FileConn(f)
		out <- dialResult{conn: conn, err: err, at: at}
	}()
	return out
}
