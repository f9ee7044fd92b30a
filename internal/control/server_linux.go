package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Server serves the control socket: one request and one answer per
// connection, root only. The daemon answers through its handler; the
// server owns the socket, its modes and the caller check.
type Server struct {
	cfg ServerConfig
	wg  sync.WaitGroup
}

// ServerLog receives what a Server has to say, for the daemon to log:
// the package itself logs nothing (and links no logger, so the client
// stays small). A nil function is not called.
type ServerLog struct {
	// Refused is called for a caller that is not root (or whose uid the
	// kernel would not say, err).
	Refused func(uid uint32, err error)
	// Failed is called when accepting fails: the server stops serving.
	Failed func(err error)
	// Undelivered is called when an answer could not be written.
	Undelivered func(err error)
}

// ServerConfig is what NewServer needs.
type ServerConfig struct {
	// Listener is the control socket (from Listen).
	Listener *net.UnixListener
	// Path names the socket in messages.
	Path string
	// Handle answers one request from root; it runs on the connection's
	// goroutine and should return within a few seconds (the connection's
	// deadline is 5 s).
	Handle func(ctx context.Context, req Request) Response
	// PeerUID says who called; nil means the kernel's SO_PEERCRED.
	PeerUID func(*net.UnixConn) (uint32, error)
	// Log receives what the server has to say; the zero value drops it.
	Log ServerLog
}

// NewServer returns a server over c.Listener; it serves from Serve on.
func NewServer(c ServerConfig) *Server {
	if c.PeerUID == nil {
		c.PeerUID = PeerCredUID
	}
	return &Server{cfg: c}
}

// Path is the socket's path.
func (s *Server) Path() string { return s.cfg.Path }

// Listen makes the control socket at path: its directory is made
// root-only (0700) if it does not exist, and the socket itself is 0600.
// A socket file left by a stopped sknockd is replaced; one that answers
// belongs to a running sknockd and is refused.
func Listen(path string) (*net.UnixListener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control.socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control.socket %s: another sknockd answers there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("control.socket %s: remove the stale socket: %w", path, err)
		}
	}
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control.socket %s: %w", path, err)
	}
	return ln, nil
}

// Serve accepts connections until Close, each on a goroutine of its own
// that gets one request and gives one answer, within a few seconds.
func (s *Server) Serve(ctx context.Context) {
	s.wg.Go(func() {
		for {
			conn, err := s.cfg.Listener.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) && s.cfg.Log.Failed != nil {
					s.cfg.Log.Failed(err)
				}
				return
			}
			s.wg.Go(func() { s.answer(ctx, conn) })
		}
	})
}

// Close stops accepting, removes the socket and waits for the answers in
// flight. A nil Server does nothing.
func (s *Server) Close() {
	if s == nil {
		return
	}
	s.cfg.Listener.Close()
	s.wg.Wait()
}

// answer serves one connection: root only (the socket's mode already
// keeps others out; the peer's credentials are checked too).
func (s *Server) answer(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	reply := func(resp Response) {
		// A reload may take longer than the request's deadline.
		_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := WriteResponse(conn, resp); err != nil && s.cfg.Log.Undelivered != nil {
			s.cfg.Log.Undelivered(err)
		}
	}
	// The request is read before the caller is refused, so that the
	// refusal reaches it rather than a broken pipe.
	req, readErr := ReadRequest(conn)
	uid, err := s.cfg.PeerUID(conn)
	if err != nil || uid != 0 {
		if s.cfg.Log.Refused != nil {
			s.cfg.Log.Refused(uid, err)
		}
		reply(Response{Error: "only root may use the control socket"})
		return
	}
	if readErr != nil {
		reply(Response{Error: readErr.Error()})
		return
	}
	reply(s.cfg.Handle(ctx, req))
}

// PeerCredUID is the kernel's word on who is at the other end of conn
// (SO_PEERCRED).
func PeerCredUID(conn *net.UnixConn) (uint32, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}
