package daemon

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"sknock/gate"
	"sknock/internal/control"
)

// controlCall is one control request on its way to the maintenance loop,
// which answers it: the loop owns the configuration and the revocation
// path, so a request sees one consistent state.
type controlCall struct {
	req   control.Request
	reply chan control.Response // capacity 1: the loop never blocks on it
}

// handleControl is the control server's handler: it hands the request
// to the maintenance loop and waits for its answer. A loop that cannot
// take it within 3 s is busy; a stopping daemon says so.
func (d *daemon) handleControl(ctx context.Context, req control.Request) control.Response {
	call := controlCall{req: req, reply: make(chan control.Response, 1)}
	select {
	case d.control <- call:
	case <-ctx.Done():
		return control.Response{Error: "sknockd is stopping"}
	case <-time.After(3 * time.Second):
		return control.Response{Error: "sknockd is busy; try again"}
	}
	select {
	case resp := <-call.reply:
		return resp
	case <-ctx.Done():
		return control.Response{Error: "sknockd is stopping"}
	}
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
	return control.Response{Error: fmt.Sprintf("unknown command %q (want grants, revoke, status or reload)", req.Command)}
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
// does, the connections attributed to them.
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
		d.logGrantEnded(g, "operator", zap.String("selected", what))
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
	r := d.read()
	st := &control.Status{
		Version:       d.version,
		Config:        d.run.cfg.Path,
		Started:       d.started.UTC(),
		UptimeSeconds: now.Sub(d.started).Seconds(),
		RulesHealthy:  !d.ops.rulesBroken.Load(),
		Policy:        d.engine.Policy().String(),
		Protect:       d.run.cfg.ProtectList(),
		Grants:        r.engine.Grants,
		Counters:      statusCounters(r),
		LastReload:    d.lastReload,
	}
	if t := d.engine.Trust(); t != nil {
		st.Trust.ToleranceSecs = t.Tolerance.Seconds()
	}
	if d.crl != nil {
		info := d.run.info
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
