package main

import (
	"context"
	"errors"
	"net/netip"
	"sknock/gate"
	"sknock/packet"
	"sknock/queue"
	"sync"
	"time"

	"go.uber.org/zap"
)

// startReaders binds every queue and starts its reader on ctx. It returns
// once all are bound (or one failed, when all are stopped again), with the
// channel a reader's failure arrives on and the function that stops them
// all.
func (d *daemon) startReaders(ctx context.Context, cancel context.CancelFunc, openSocket queue.Opener) (<-chan error, func(), error) {
	gateQueues := d.cfg.Rules.GateQueueNumbers()
	readers := len(gateQueues) + 2 // and the knock and hold queues
	bound := make(chan error, readers)
	open := func(sc queue.SocketConfig) (queue.Socket, error) {
		s, err := openSocket(sc)
		bound <- err
		return s, err
	}
	for _, q := range gateQueues {
		g, err := queue.NewGate(queue.GateConfig{
			Queue:      q,
			Decide:     d.decideGate,
			HoldQueue:  d.cfg.HoldQueue,
			Holding:    true,
			RejectMark: d.cfg.Rules.Mark,
			Open:       open,
		})
		if err != nil {
			return nil, nil, err
		}
		d.gateQ = append(d.gateQ, g)
	}
	var err error
	if d.knockQ, err = queue.NewKnock(queue.KnockConfig{
		Queue:     d.cfg.Rules.KnockQueue,
		Handle:    d.handleKnock,
		Queued:    d.engine.KnockQueued,
		Unhandled: d.engine.KnockUnhandled,
		// Under a flood, clients let in during the last 10 minutes are
		// shed last.
		Priority: d.engine.RecentlyGranted,
		Workers:  d.cfg.KnockWorkers,
		Depth:    d.cfg.KnockBacklog,
		// Knocks get the answer the rules give the knock ports' other
		// datagrams, whatever their length (reload keeps them in step).
		Reject:     d.cfg.Rules.RejectsKnocks(),
		RejectMark: d.cfg.Rules.Mark,
		Open:       open,
	}); err != nil {
		return nil, nil, err
	}
	if d.holdQ, err = queue.NewHold(queue.HoldConfig{
		Queue:       d.cfg.HoldQueue,
		Deliver:     d.deliverHeld,
		RejectMark:  d.cfg.Rules.Mark,
		MaxQueueLen: gate.DefaultMaxHeld,
		Open:        open,
	}); err != nil {
		return nil, nil, err
	}

	// readerDone has room for every reader, so none blocks on it; the
	// wait group, not the channel, tells when all have returned.
	readerDone := make(chan error, readers)
	var running sync.WaitGroup
	runReader := func(run func(context.Context) error) {
		running.Go(func() { readerDone <- run(ctx) })
	}
	for _, g := range d.gateQ {
		runReader(g.Run)
	}
	runReader(d.knockQ.Run)
	runReader(d.holdQ.Run)
	stop := func() {
		cancel()
		stopped := make(chan struct{})
		go func() { running.Wait(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			d.log.Warn("queue reader slow to stop")
		}
	}
	for range readers {
		if err := <-bound; err != nil {
			stop()
			return nil, nil, err
		}
	}
	return readerDone, stop, nil
}

// decideGate is the gate queue's verdict function: the engine decides,
// and a denial is logged (rate-limited). It does not allocate unless a
// line is written.
func (d *daemon) decideGate(h *packet.Header) packet.Verdict {
	now := d.engine.Now()
	v, granted := d.engine.Verdict(h, now)
	if !granted && v != packet.Defer {
		d.decisions.gateDenied(h, v, d.engine.Policy(), now)
	}
	return v
}

// deliverHeld runs on the hold queue's receive goroutine: it hands a
// deferred packet to the holder.
func (d *daemon) deliverHeld(ctx context.Context, p *queue.Packet, h *packet.Header) {
	d.holder.Hold(ctx, gate.HeldPacket{ID: p.ID, Mark: p.Mark, Header: *h})
}

// settleHeld runs on the holder's goroutine, the only one that answers
// the hold queue.
func (d *daemon) settleHeld(p *gate.HeldPacket, v packet.Verdict) {
	if v != packet.Accept {
		d.decisions.gateDenied(&p.Header, v, d.engine.Policy(), d.engine.Now())
	}
	if err := d.holdQ.Settle(p.ID, p.Mark, v); err != nil && !errors.Is(err, queue.ErrNotRunning) {
		d.log.Warn("hold queue verdict refused; the kernel drops the packet", zap.Error(err))
	}
}

// handleKnock runs on a knock worker: the engine decides, the daemon logs.
func (d *daemon) handleKnock(src netip.Addr, payload []byte) {
	start := d.engine.Now()
	dec := d.engine.Knock(src, payload)
	end := d.engine.Now()
	d.ops.knockLatency.Observe(end.Sub(start).Seconds())
	d.decisions.knock(src, &dec, start, end, d.engine.OpenDuration())
	if d.hooks.knockDecided != nil {
		d.hooks.knockDecided(src, dec)
	}
}
