package soak

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Echo serves TCP and UDP echo on ports, returning every byte as it came.
// Fault, for showing that the soak catches it, makes it misbehave once:
// "corrupt" flips a byte, "cut" resets the connection, each in the first
// connection that lives longer than FaultAfter (a held one).
type Echo struct {
	TCP, UDP   []int
	Fault      string
	FaultAfter time.Duration
	faulted    atomic.Bool
}

// Serve listens on every port (all addresses, both families) and echoes
// until ctx ends.
func (e *Echo) Serve(ctx context.Context) error {
	var wg sync.WaitGroup
	var closers []func() error
	for _, port := range e.TCP {
		l, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		closers = append(closers, l.Close)
		wg.Go(func() { e.acceptLoop(l) })
	}
	for _, port := range e.UDP {
		c, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		closers = append(closers, c.Close)
		wg.Go(func() { echoUDP(c) })
	}
	<-ctx.Done()
	for _, c := range closers {
		c()
	}
	wg.Wait()
	return nil
}

func (e *Echo) acceptLoop(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go e.echoTCP(c)
	}
}

func (e *Echo) echoTCP(c net.Conn) {
	defer c.Close()
	born := time.Now()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if e.Fault != "" && time.Since(born) > e.FaultAfter && e.faulted.CompareAndSwap(false, true) {
			switch e.Fault {
			case "corrupt":
				buf[0] ^= 0xff
			case "cut":
				if tc, ok := c.(*net.TCPConn); ok {
					tc.SetLinger(0) // close with a RST
				}
				return
			}
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

func echoUDP(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteTo(buf[:n], from)
	}
}
