package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Probe schedule. The first probe goes out right after the knock; the next
// ones follow at growing gaps so that a port opened within milliseconds is
// seen within milliseconds, and a slow one is not hammered. Probes overlap:
// a SYN the gatekeeper dropped because it beat the knock would only be
// retransmitted by the kernel a second later, so a new connection is tried
// rather than waiting for it.
const (
	// FallbackDelay is how long the first knock of a host with addresses
	// of both families waits for its port before the other family is
	// knocked (RFC 8305's connection attempt delay is 250 ms; a knock
	// adds the gatekeeper's decision). Later knocks wait Config.Timeout.
	FallbackDelay = 300 * time.Millisecond

	firstProbeGap = 2 * time.Millisecond
	maxProbeGap   = 250 * time.Millisecond
)

// probeGap returns the wait after probe n (0-based) before probe n+1:
// 2ms, 4ms, 8ms, … capped at 250ms. A knock takes the gatekeeper about a
// millisecond, so the second probe usually connects.
func probeGap(n int) time.Duration {
	if n >= 16 {
		return maxProbeGap
	}
	return min(firstProbeGap<<n, maxProbeGap)
}

// verify probes res's TCP port until it accepts a connection, knocking
// again after every Timeout without success, at most Retries times (and
// at least once on each of the host's address families). The first knock
// went to the first address; each re-knock goes to the next, cycling. It
// fills in res and returns the connection that verified the port, or nil.
func (c *Client) verify(ctx context.Context, ts *targets, res *Result, start time.Time) net.Conn {
	var lastErr error
	attempts := max(c.cfg.Retries+1, len(ts.list))
	var t *target
	for attempt := 0; attempt < attempts; attempt++ {
		next, err := c.at(ctx, ts, attempt)
		if err != nil {
			lastErr = err
			if attempt+1 < attempts {
				continue
			}
			break
		}
		t = next
		if attempt == 0 && res.firstErr != nil {
			// The first knock could not be sent: on to the next address.
			lastErr, res.firstErr = res.firstErr, nil
			continue
		}
		if attempt > 0 {
			if err := c.send(ctx, t, res.Request); err != nil {
				lastErr = fmt.Errorf("knock %s on %s: %w", res.Request, t.host, err)
				if attempt+1 < attempts {
					continue
				}
				break
			}
			res.Knocks++
		}
		wait := c.cfg.Timeout
		if attempt == 0 && len(ts.list) > 1 {
			// Happy Eyeballs: the other family gets its knock soon after
			// the first, not a whole Timeout later.
			wait = min(wait, FallbackDelay)
		}
		var pre *preConn
		if attempt == 0 {
			pre = res.pre
		}
		conn, probes, already, err := c.probe(ctx, netip.AddrPortFrom(t.host, res.Request.Port).String(), wait, pre)
		res.Probes += probes
		if conn != nil {
			res.Status, res.Elapsed, res.Err = StatusOpen, time.Since(start), nil
			if already {
				res.Status = StatusAlreadyOpen
			}
			res.Addr = t.host
			return conn
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		c.rediscover(ctx, ts, attempt)
	}
	res.Status, res.Elapsed = StatusFailed, time.Since(start)
	where := ts.name
	if t != nil && where != t.host.String() {
		where = fmt.Sprintf("%s (%s)", ts.name, t.host)
	}
	if err := ctx.Err(); err != nil {
		res.Err = fmt.Errorf("%s on %s: %w", res.Request, where, err)
		return nil
	}
	knocks := "knocks"
	if res.Knocks == 1 {
		knocks = "knock"
	}
	hint := ""
	if t != nil {
		hint = ": " + c.foreignServerCert(ts.name, t.host.String()) + t.hint(lastErr)
		if found := c.selfCheck(ctx, t.host); found != "" {
			hint = ": " + found
		}
	}
	res.Err = fmt.Errorf("%s on %s: %w after %d %s in %s (last probe: %w)%s",
		res.Request, where, ErrNotOpen, res.Knocks, knocks, res.Elapsed.Round(time.Millisecond), lastErr, hint)
	return nil
}

// dialResult is the outcome of one probe.
type dialResult struct {
	conn net.Conn
	err  error
}

// probe connects to addr on the probe schedule for at most Timeout and
// returns the first connection made, closing any other that also
// succeeds, and how many probes it started. Every probe has returned when
// it returns. When pre (a connection started before the knock) connects
// before any probe, its connection is returned with already set: the
// port was open before the knock.
func (c *Client) probe(ctx context.Context, addr string, timeout time.Duration, pre *preConn) (conn net.Conn, probes int, already bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	results := make(chan dialResult)
	pending := 0
	var preResult chan dialResult
	if pre != nil {
		preResult = pre.result
	}
	// drain waits for the probes still running (cancel makes them return)
	// so none outlives the call.
	drain := func() {
		cancel()
		for ; pending > 0; pending-- {
			if r := <-results; r.conn != nil {
				r.conn.Close()
			}
		}
	}
	next := time.NewTimer(0)
	defer next.Stop()
	var lastErr error
	for {
		select {
		case <-next.C:
			pending++
			go func() {
				conn, err := c.cfg.Dial(ctx, "tcp", addr)
				results <- dialResult{conn, err}
			}()
			next.Reset(probeGap(probes))
			probes++
		case r := <-preResult:
			preResult <- dialResult{} // taken: stop finds nothing to close
			preResult = nil
			if r.err == nil {
				drain()
				return r.conn, probes, true, nil
			}
		case r := <-results:
			pending--
			if r.err == nil {
				drain()
				if preResult != nil {
					if pr, ok := preConnected(pre); ok {
						r.conn.Close()
						return pr, probes, true, nil
					}
				}
				return r.conn, probes, false, nil
			}
			lastErr = r.err
		case <-ctx.Done():
			drain()
			if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) {
				lastErr = fmt.Errorf("connect %s: no answer within %s", addr, timeout)
			}
			return nil, probes, false, lastErr
		}
	}
}

// preConnected reports whether the connection started before the knock
// (whose SYN left first) is established when a probe sent after the knock
// has connected: had the port been open before the knock, the earlier
// SYN would have been answered first. It asks the kernel, so no wait is
// added; it returns that connection, and leaves an empty result for stop.
func preConnected(pre *preConn) (net.Conn, bool) {
	if pre == nil {
		return nil, false
	}
	select {
	case r := <-pre.result:
		pre.result <- dialResult{}
		return r.conn, r.err == nil && r.conn != nil
	default:
	}
	if pre.connected == nil || !pre.connected() {
		return nil, false
	}
	r := <-pre.result // established: its outcome is on its way
	pre.result <- dialResult{}
	return r.conn, r.err == nil && r.conn != nil
}

// preKnockGap separates the SYN of the connection started before the
// knock from the knock (a verified knock waits this much longer; bench 4a,
// which does not verify, does not).
const preKnockGap = time.Millisecond

// preConn is a connection started just before the first knock, to tell a
// port the knock opened from one that was open already.
type preConn struct {
	result    chan dialResult // one result, buffered
	cancel    context.CancelFunc
	connected func() bool // asks the kernel; nil with a Dial of the caller's
}

// preConnect starts connecting to addr and returns once the SYN is on
// its way (see startConnect), or, with a Dial of the caller's (tests),
// once that Dial returned. The attempt lasts until stop: under policy drop
// a SYN without a grant is dropped and the connection would only complete
// at the kernel's retransmission, a second later; it must add no wait.
func (c *Client) preConnect(ctx context.Context, addr netip.AddrPort) *preConn {
	ctx, cancel := context.WithCancel(ctx)
	p := &preConn{result: make(chan dialResult, 1), cancel: cancel}
	if c.customDial {
		conn, err := c.cfg.Dial(ctx, "tcp", addr.String())
		p.result <- dialResult{conn: conn, err: err}
		return p
	}
	outcome, connected := startConnect(ctx, addr)
	p.connected = connected
	go func() { p.result <- <-outcome }()
	return p
}

// stop ends the attempt and closes its connection, if it made one and no
// one took it. A nil preConn does nothing.
func (p *preConn) stop() {
	if p == nil {
		return
	}
	p.cancel()
	go func() {
		if r := <-p.result; r.conn != nil {
			r.conn.Close()
		}
	}()
}
