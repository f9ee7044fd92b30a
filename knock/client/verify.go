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
		conn, probes, err := c.probe(ctx, netip.AddrPortFrom(t.host, res.Request.Port).String(), wait)
		res.Probes += probes
		if conn != nil {
			res.Status, res.Elapsed, res.Err = StatusOpen, time.Since(start), nil
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
// it returns.
func (c *Client) probe(ctx context.Context, addr string, timeout time.Duration) (net.Conn, int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	results := make(chan dialResult)
	pending, probes := 0, 0
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
		case r := <-results:
			pending--
			if r.err == nil {
				drain()
				return r.conn, probes, nil
			}
			lastErr = r.err
		case <-ctx.Done():
			drain()
			if lastErr == nil || errors.Is(lastErr, context.DeadlineExceeded) {
				lastErr = fmt.Errorf("connect %s: no answer within %s", addr, timeout)
			}
			return nil, probes, lastErr
		}
	}
}
