package main

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"sknock/gate"
	"sknock/internal/control"
)

// defaultControlSocket is control.socket's default.
const defaultControlSocket = control.DefaultSocket

// controlCall is one control request on its way to the maintenance loop,
// which answers it: the loop owns the configuration and the revocation
// path, so a request sees one consistent state.
type controlCall struct {
	req   control.Request
	reply chan control.Response // capacity 1: the loop never blocks on it
}

// controlServer serves the control socket.
type controlServer struct {
	ln    *net.UnixListener
	path  string
	calls chan<- controlCall
	log   *zap.Logger
	// peerUID returns the uid of the process at the other end of conn;
	// tests replace it.
	peerUID func(*net.UnixConn) (uint32, error)
	wg      sync.WaitGroup
}

// listenControl makes the control socket at path: its directory is made
// root-only (0700) if it does not exist, and the socket itself is 0600.
// A socket file left by a stopped sknockd is replaced; one that answers
// belongs to a running sknockd and is refused.
func listenControl(path string) (*net.UnixListener, error) {
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

// serve accepts connections until the listener is closed. Each gets one
// request and one answer, within a few seconds.
func (s *controlServer) serve(ctx context.Context) {
	s.wg.Go(func() {
		for {
			conn, err := s.ln.AcceptUnix()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					s.log.Error("control socket failed; sknockd goes on without it", zap.String("socket", s.path), zap.Error(err))
				}
				return
			}
			s.wg.Go(func() { s.answer(ctx, conn) })
		}
	})
}

// close stops accepting, removes the socket and waits for the answers in
// flight.
func (s *controlServer) close() {
	if s == nil {
		return
	}
	s.ln.Close()
	s.wg.Wait()
}

// answer serves one connection: root only (the socket's mode already
// keeps others out; the peer's credentials are checked too).
func (s *controlServer) answer(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	reply := func(resp control.Response) {
		if err := control.WriteResponse(conn, resp); err != nil {
			s.log.Debug("control answer not delivered", zap.Error(err))
		}
	}
	// The request is read before the caller is refused, so that the
	// refusal reaches it rather than a broken pipe.
	req, readErr := control.ReadRequest(conn)
	uid, err := s.peerUID(conn)
	if err != nil || uid != 0 {
		s.log.Warn("control request refused: not root", zap.Uint32("uid", uid), zap.Error(err))
		reply(control.Response{Error: "only root may use the control socket"})
		return
	}
	if readErr != nil {
		reply(control.Response{Error: readErr.Error()})
		return
	}
	call := controlCall{req: req, reply: make(chan control.Response, 1)}
	select {
	case s.calls <- call:
	case <-ctx.Done():
		reply(control.Response{Error: "sknockd is stopping"})
		return
	case <-time.After(3 * time.Second):
		reply(control.Response{Error: "sknockd is busy; try again"})
		return
	}
	select {
	case resp := <-call.reply:
		reply(resp)
	case <-ctx.Done():
		reply(control.Response{Error: "sknockd is stopping"})
	}
}

// peerCredUID is the kernel's word on who is at the other end.
func peerCredUID(conn *net.UnixConn) (uint32, error) {
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

// answerControl runs on the maintenance loop: it answers one request.
func (d *daemon) answerControl(req control.Request) control.Response {
	switch req.Command {
	case control.CommandGrants:
		return d.listGrants()
	case control.CommandRevoke:
		return d.revokeGrants(req)
	case control.CommandStatus:
		return control.Response{Status: d.status()}
	}
	return control.Response{Error: fmt.Sprintf("unknown command %q (want grants, revoke or status)", req.Command)}
}

// listGrants lists the live grant shares with the certificates that made
// them.
func (d *daemon) listGrants() control.Response {
	now := d.engine.Now()
	grants, live := d.engine.Grants().List(now, control.MaxListed)
	out := make([]control.Grant, 0, len(grants))
	for _, g := range grants {
		out = append(out, listedGrant(g.Grant, g.Subject, g.Serial, g.Expiry, now))
	}
	return control.Response{Grants: out, Live: live}
}

func listedGrant(g gate.Grant, subject string, serial *big.Int, expiry, now time.Time) control.Grant {
	cg := control.Grant{
		Source:      g.Source.String(),
		Proto:       g.Proto.String(),
		Port:        g.Port,
		Subject:     subject,
		Expires:     expiry.UTC(),
		SecondsLeft: expiry.Sub(now).Seconds(),
	}
	if serial != nil {
		cg.Serial = serial.String()
	}
	return cg
}

// revokeGrants ends the grant shares req selects and, as a revocation
// does, the connections attributed to them (with gate.revoke_mark set).
// It ends grants, not certificates: the client may knock again; to refuse
// a certificate for good, revoke it in the CRL.
func (d *daemon) revokeGrants(req control.Request) control.Response {
	sel, what, err := grantSelector(req)
	if err != nil {
		return control.Response{Error: err.Error()}
	}
	now := d.engine.Now()
	ended := d.engine.EndGrants(sel)
	resp := control.Response{}
	for _, g := range ended.Grants {
		resp.Grants = append(resp.Grants, listedGrant(g.Grant, g.Subject, g.Serial, g.Expiry, now))
		d.log.Warn("grant ended",
			zap.String("source", g.Source.String()),
			zap.String("proto", g.Proto.String()),
			zap.Uint64("port", uint64(g.Port)),
			zap.Stringer("serial", g.Serial),
			zap.String("reason", "operator"),
			zap.String("selected", what),
			zap.String("subject", g.Subject),
			zap.Bool("address_still_open", g.StillOpen),
			zap.Time("would_expire", g.Expiry),
		)
	}
	n, err := d.endConns(ended.Conns, "connections of ended grants ended")
	resp.Connections = n
	if err != nil {
		d.log.Error("could not end every connection of the ended grants; those go on until they close", zap.Int("ended", n), zap.Error(err))
		resp.Error = fmt.Sprintf("%d grant(s) ended, but not every connection: %v", len(ended.Grants), err)
	}
	return resp
}

// grantSelector turns a revoke request into what it selects, and words
// for the log.
func grantSelector(req control.Request) (gate.Selection, string, error) {
	set := 0
	for _, b := range []bool{req.Source != "", req.Serial != "", req.All} {
		if b {
			set++
		}
	}
	if set != 1 {
		return gate.Selection{}, "", errors.New("revoke needs exactly one of a source, a serial or all")
	}
	switch {
	case req.All:
		return gate.Selection{All: true}, "all", nil
	case req.Source != "":
		src, err := netip.ParseAddr(req.Source)
		if err != nil {
			return gate.Selection{}, "", fmt.Errorf("source %q is not an IP address", req.Source)
		}
		src = src.Unmap()
		return gate.Selection{Source: src}, "source " + src.String(), nil
	}
	serial, err := parseSerial(req.Serial)
	if err != nil {
		return gate.Selection{}, "", err
	}
	return gate.Selection{Serial: serial}, "serial " + serial.String(), nil
}

// parseSerial reads a certificate serial: decimal, or hexadecimal with a
// 0x prefix (colons allowed, as openssl prints them).
func parseSerial(s string) (*big.Int, error) {
	n := new(big.Int)
	t := strings.ReplaceAll(s, ":", "")
	ok := false
	if h, cut := strings.CutPrefix(strings.ToLower(t), "0x"); cut {
		_, ok = n.SetString(h, 16)
	} else {
		_, ok = n.SetString(t, 10)
	}
	if !ok || n.Sign() <= 0 {
		return nil, fmt.Errorf("serial %q is not a positive number (decimal, or hex with 0x)", s)
	}
	return n, nil
}

// status is what `sknock status` shows.
func (d *daemon) status() *control.Status {
	now := time.Now()
	s := d.engine.Snapshot()
	g, counters := d.gateTotals(), map[string]uint64{}
	for reason, n := range s.Knocks {
		counters["knocks_"+reason] = n
	}
	for verdict, n := range s.Gate {
		counters["gate_"+verdict] = n
	}
	counters["gate_packets"] = g.Packets
	counters["gate_held"] = s.Deferred
	counters["gate_hold_timeouts"] = s.HoldTimeouts
	counters["gate_would_deny"] = s.WouldDeny
	if d.knockQ != nil {
		k := d.knockQ.Stats()
		counters["knock_packets"] = k.Received.Load()
		counters["knock_shed"] = k.Shed.Load()
	}
	counters["trust_reloads"] = d.ops.trustReloads.Load()
	counters["trust_reload_failures"] = d.ops.trustReloadFailures.Load()
	counters["rules_restorations"] = d.ops.rulesRestored.Load()
	st := &control.Status{
		Version:       version,
		Config:        d.cfg.Path,
		Started:       d.started.UTC(),
		UptimeSeconds: now.Sub(d.started).Seconds(),
		RulesHealthy:  !d.ops.rulesBroken.Load(),
		Policy:        d.engine.Policy().String(),
		Protect:       protectList(d.cfg),
		Grants:        s.Grants,
		Counters:      counters,
	}
	if t := d.engine.Trust(); t != nil {
		st.Trust.ToleranceSecs = t.Tolerance.Seconds()
	}
	if d.crl != nil {
		info := d.crl.info
		st.Trust.Server, st.Trust.ServerNotAfter = info.Server, info.ServerNotAfter.UTC()
		for _, ca := range info.CAs {
			st.Trust.CAs = append(st.Trust.CAs, ca.Subject)
		}
		for _, c := range info.CRLs {
			st.Trust.CRLs = append(st.Trust.CRLs, control.CRLStatus{File: c.File, Issuer: c.Issuer, Revoked: c.Serials, ThisUpdate: c.ThisUpdate.UTC(), NextUpdate: c.NextUpdate.UTC()})
		}
		for _, w := range healthWarnings(info, d.engine.Now()) {
			st.Trust.Warnings = append(st.Trust.Warnings, control.Warning{Check: w.Check, Text: w.Text})
		}
	}
	if crl := currentCRL(d.engine); crl != nil {
		st.Trust.CRL = true
		st.Trust.CRLRevoked = crl.Len()
		st.Trust.CRLThisUpdate = crl.ThisUpdate.UTC()
		st.Trust.CRLNextUpdate = crl.NextUpdate.UTC()
		st.Trust.CRLStale = crl.Stale(d.engine.Now())
		if crl.Issuer != nil {
			st.Trust.CRLIssuer = crl.Issuer.Subject.String()
		}
	}
	return st
}

// setSocketPath reads control.socket: an absolute path, or empty (no
// control socket).
func setSocketPath(c *Config, n *yaml.Node) string {
	s, msg := scalar(n)
	if msg != "" {
		return msg
	}
	if n.Tag == "!!null" {
		s = ""
	}
	if s != "" && !filepath.IsAbs(s) {
		return fmt.Sprintf("%q is not an absolute path (empty turns the control socket off)", s)
	}
	if len(s) > 107 {
		return fmt.Sprintf("%q is longer than a unix socket path may be (107 bytes)", s)
	}
	c.ControlSocket = s
	return ""
}
