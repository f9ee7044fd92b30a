// Package connwatch keeps the gate's record of connections current: it
// forgets a connection when conntrack reports it destroyed, and, because
// those events can be lost (a full netlink buffer: ENOBUFS) or come late
// (120 s after a close, days for an idle connection), it also prunes the
// record against a dump of conntrack's table every minute, whenever the
// record is full, and on request (at each revocation). The conntrack I/O
// sits behind Conntrack, with the kernel's in Kernel and a fake in tests.
package connwatch

import (
	"context"
	"fmt"
	"time"

	"sknock/gate"
)

// Conntrack is the kernel's connection tracking table, as far as the
// watcher needs it.
type Conntrack interface {
	// Dump returns the original-direction tuple of every tracked
	// connection.
	Dump() ([]gate.Conn, error)
	// WatchDestroyed sends the original-direction tuple of every
	// connection the kernel forgets to destroyed until ctx is done or the
	// event socket fails (events lost); it returns why it stopped.
	WatchDestroyed(ctx context.Context, destroyed chan<- gate.Conn) error
}

// Record is the record the watcher keeps current (a *gate.Engine).
type Record interface {
	ForgetConn(gate.Conn) bool
	PruneConns(live map[gate.Conn]struct{}, dumped time.Time) int
	ConnsFull() <-chan struct{}
}

// Watcher keeps a Record current. Make it with New, set the optional
// fields, then call Run.
type Watcher struct {
	conntrack Conntrack
	record    Record
	// Clock returns the time; nil means time.Now.
	Clock func() time.Time
	// Every is how often the record is pruned; zero means a minute.
	Every time.Duration
	// Failed, when set, is told each failure (a dump or the event socket)
	// so that the daemon can log it; it runs on the watcher's goroutines.
	Failed func(error)
	// Pruned, when set, is told how many records each prune forgot.
	Pruned func(int)

	prune chan struct{}
}

// New returns a watcher keeping record current against ct.
func New(ct Conntrack, record Record) *Watcher {
	return &Watcher{conntrack: ct, record: record, prune: make(chan struct{}, 1)}
}

// PruneSoon asks Run to prune the record now (at a revocation); it does
// not wait. Calls while a prune is pending are folded.
func (w *Watcher) PruneSoon() {
	select {
	case w.prune <- struct{}{}:
	default:
	}
}

// Run watches until ctx is done. It prunes once at the start.
func (w *Watcher) Run(ctx context.Context) {
	every := w.Every
	if every <= 0 {
		every = time.Minute
	}
	go w.watchEvents(ctx, every)
	tick := time.NewTicker(every)
	defer tick.Stop()
	w.Prune()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-w.prune:
		case <-w.record.ConnsFull():
		}
		w.Prune()
	}
}

// Prune forgets the records of connections conntrack no longer tracks,
// and returns how many it forgot.
func (w *Watcher) Prune() (int, error) {
	now := time.Now
	if w.Clock != nil {
		now = w.Clock
	}
	dumped := now() // records made after this are kept: the dump may predate them
	conns, err := w.conntrack.Dump()
	if err != nil {
		err = fmt.Errorf("prune the connection record: %w", err)
		w.failed(err)
		return 0, err
	}
	live := make(map[gate.Conn]struct{}, len(conns))
	for _, c := range conns {
		live[c] = struct{}{}
	}
	n := w.record.PruneConns(live, dumped)
	if w.Pruned != nil {
		w.Pruned(n)
	}
	return n, nil
}

// watchEvents forgets destroyed connections, and after the event socket
// fails (events were lost) prunes and listens again, at most once per
// retry interval.
func (w *Watcher) watchEvents(ctx context.Context, retry time.Duration) {
	destroyed := make(chan gate.Conn, 1024)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case c := <-destroyed:
				w.record.ForgetConn(c)
			}
		}
	}()
	for {
		err := w.conntrack.WatchDestroyed(ctx, destroyed)
		if ctx.Err() != nil {
			return
		}
		w.failed(fmt.Errorf("conntrack events (ended connections may be missed until the next prune): %w", err))
		w.PruneSoon()
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(retry, 5*time.Second)):
		}
	}
}

func (w *Watcher) failed(err error) {
	if w.Failed != nil {
		w.Failed(err)
	}
}
