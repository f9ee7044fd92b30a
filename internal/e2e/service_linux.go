package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"sknock/internal/netns"
)

// ServeTCPEcho listens on addr (e.g. ":2000", both families) inside ns and
// echoes every connection until t ends.
func ServeTCPEcho(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	var l net.Listener
	if err := ns.Do(func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatalf("TCP echo on %s in %s: %v", addr, ns.Name, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// ServeUDPEcho listens on addr (e.g. ":8000", both families) inside ns and
// sends every datagram back to its sender until t ends.
func ServeUDPEcho(t testing.TB, ns *netns.NS, addr string) {
	t.Helper()
	var c net.PacketConn
	if err := ns.Do(func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("UDP echo on %s in %s: %v", addr, ns.Name, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			c.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
}

// DialTCP connects from ns to addr ("198.18.0.1:2000").
func DialTCP(ns *netns.NS, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	return c, err
}

// DialUDP returns a UDP socket in ns connected to addr; ICMP errors for
// it show up as ECONNREFUSED on the next read or write.
func DialUDP(ns *netns.NS, addr string) (*net.UDPConn, error) {
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	var c *net.UDPConn
	err = ns.Do(func() (err error) {
		c, err = net.DialUDP("udp", nil, raddr)
		return err
	})
	return c, err
}

// SendUDP sends one datagram from ns to addr from a fresh socket.
func SendUDP(ns *netns.NS, addr string, payload []byte) error {
	c, err := DialUDP(ns, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write(payload)
	return err
}

// Echo writes msg on c and reads the same bytes back within timeout.
func Echo(c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo returned %q, want %q", got, msg)
	}
	return nil
}

// TCPEcho connects from ns to addr, checks that a line comes back
// unchanged, and closes the connection. The error is the dial's when it
// failed (test it with IsRefused and IsTimeout).
func TCPEcho(ns *netns.NS, addr string, timeout time.Duration) error {
	c, err := DialTCP(ns, addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return Echo(c, []byte("hello over tcp\n"), timeout)
}

// UDPEcho sends a datagram from ns to addr on a fresh socket (so from a
// fresh source port, a new flow for conntrack) and waits up to timeout
// for it to come back: nil means it did; otherwise the read's error (an
// ICMP port unreachable is ECONNREFUSED, silence a timeout).
func UDPEcho(ns *netns.NS, addr string, timeout time.Duration) error {
	c, err := DialUDP(ns, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	return Echo(c, []byte("hello over udp"), timeout)
}

// IsTimeout reports whether err is a timeout.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// IsRefused reports whether err is a refusal: a TCP reset to a SYN, or an
// ICMP port unreachable for a connected UDP socket.
func IsRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
