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
	at   time.Time // when the dial returned
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
	// preWon is the connection started before the knock, once it has
	// connected before any probe; decide fires when it counts as open
	// before the knock: margin after it connected, with no probe
	// connected by then.
	var preWon dialResult
	var decide <-chan time.Time
	for {
		select {
		case <-next.C:
			pending++
			go func() {
				conn, err := c.cfg.Dial(ctx, "tcp", addr)
				results <- dialResult{conn, err, time.Now()}
			}()
			next.Reset(probeGap(probes))
			probes++
		case r := <-preResult:
			preResult <- dialResult{} // taken: stop finds nothing to close
			preResult = nil
			if r.err == nil {
				if c.preMargin() == 0 {
					drain()
					return r.conn, probes, true, nil
				}
				// The gatekeeper may have held its SYN for this knock's
				// grant and let it in with the probes: only if no probe
				// connects within the margin was the port open before.
				preWon = r
				wait := time.NewTimer(time.Until(r.at.Add(c.preMargin())))
				defer wait.Stop()
				decide = wait.C
			}
		case <-decide:
			drain()
			return preWon.conn, probes, true, nil
		case r := <-results:
			pending--
			if r.err == nil {
				drain()
				if preResult != nil { // reported late? its time tells
					select {
					case pr := <-preResult:
						preResult <- dialResult{}
						switch {
						case pr.err == nil && c.preMargin() == 0:
							r.conn.Close()
							return pr.conn, probes, true, nil
						case pr.err == nil:
							preWon = pr
						}
					default:
					}
				}
				if preWon.conn != nil {
					if !r.at.Before(preWon.at.Add(c.preMargin())) {
						r.conn.Close()
						return preWon.conn, probes, true, nil
					}
					preWon.conn.Close()
				}
				return r.conn, probes, false, nil
			}
			lastErr = r.err
		case <-ctx.Done():
			drain()
			if preWon.conn != nil {
				return preWon.conn, probes, true, nil
			}
			if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) {
				lastErr = fmt.Errorf("connect %s: no answer within %s", addr, timeout)
			}
			return nil, probes, false, lastErr
		}
	}
}

// preMargin is how much earlier than every probe the connection started
// before the knock must connect to count as open before the knock: half
// the gap between its SYN and the knock (a SYN the gatekeeper held for
// the knock's grant connects with the probes, within microseconds). With
// a Dial of the caller's (tests, no gap) it is zero.
func (c *Client) preMargin() time.Duration {
	if c.customDial {
		return 0
	}
	return preKnockGap / 2
}

// preKnockGap separates the SYN of the connection started before the
// knock from the knock (a verified knock waits this much longer; bench 4a,
// which does not verify, does not).
const preKnockGap = time.Millisecond

// preConn is a connection started just before the first knock, to tell a
// port the knock opened from one that was open already.
type preConn struct {
	result chan dialResult // one result, buffered
	cancel context.CancelFunc
}

// preConnectTo starts connecting to addr and returns once the SYN is on
// its way (see startConnect), or, with a Dial of the caller's (tests),
// once that Dial returned. The attempt lasts until stop: under policy drop
// a SYN without a grant is dropped and the connection would only complete
// at the kernel's retransmission, a second later; it must add no wait.
func (c *Client) preConnectTo(ctx context.Context, addr netip.AddrPort) *preConn {
	ctx, cancel := context.WithCancel(ctx)
	p := &preConn{result: make(chan dialResult, 1), cancel: cancel}
	if c.customDial {
		conn, err := c.cfg.Dial(ctx, "tcp", addr.String())
		p.result <- dialResult{conn: conn, err: err, at: time.Now()}
		return p
	}
	outcome := startConnect(ctx, addr)
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
