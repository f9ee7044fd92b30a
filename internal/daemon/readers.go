package daemon

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"

	"sknock/gate"
	"sknock/packet"
	"sknock/queue"
)

// startReaders binds every queue and starts its reader on ctx. It returns
// once all are bound (or one failed, when all are stopped again), with the
// channel a reader's failure arrives on and the function that stops them
// all.
func (d *daemon) startReaders(ctx context.Context, cancel context.CancelFunc, openSocket queue.Opener) (<-chan error, func(), error) {
	gateQueues := d.run.cfg.Rules.GateQueueNumbers()
	readers := len(gateQueues) + 2 // and the knock and hold queues
	bound := make(chan error, readers)
	open := func(sc queue.SocketConfig) (queue.Socket, error) {
		s, err := openSocket(sc)
		bound <- err
		return s, err
	}
	repeats := queue.NewRepeats(nil) // shared: a held packet returns to a gate queue
	var closeGens []func()
	for _, q := range gateQueues {
		inPlace, closeGen := d.grantInPlace()
		closeGens = append(closeGens, closeGen)
		g, err := queue.NewGate(queue.GateConfig{
			Queue:        q,
			Decide:       d.decideGate,
			HoldQueue:    d.run.cfg.HoldQueue,
			Holding:      true,
			RejectMark:   d.run.cfg.Rules.Mark,
			AcceptMark:   d.run.cfg.Rules.AcceptMark,
			Repeats:      repeats,
			GrantInPlace: inPlace,
			Open:         open,
		})
		if err != nil {
			for _, c := range closeGens {
				c()
			}
			return nil, nil, err
		}
		d.gateQ = append(d.gateQ, g)
	}
	var err error
	if d.knockQ, err = queue.NewKnock(queue.KnockConfig{
		Queue:     d.run.cfg.Rules.KnockQueue,
		Handle:    d.handleKnock,
		Queued:    d.engine.KnockQueued,
		Unhandled: d.engine.KnockUnhandled,
		// Under a flood, clients let in during the last 10 minutes are
		// shed last.
		Priority: d.engine.RecentlyGranted,
		// v2 knocks whose mac1 is right wait ahead of v1 ones; a wrong
		// mac1 is refused on the receive goroutine (PROTOCOL-v2.md).
		Classify: d.engine.KnockLane,
		AtOnce:   d.refuseKnock,
		Workers:  d.run.cfg.KnockWorkers,
		Depth:    d.run.cfg.KnockBacklog,
		// Knocks get the answer the rules give the knock ports' other
		// datagrams, whatever their length (reload keeps them in step).
		Reject:     d.run.cfg.Rules.RejectsKnocks(),
		RejectMark: d.run.cfg.Rules.Mark,
		Open:       open,
	}); err != nil {
		return nil, nil, err
	}
	if d.holdQ, err = queue.NewHold(queue.HoldConfig{
		Queue:       d.run.cfg.HoldQueue,
		Deliver:     d.deliverHeld,
		RejectMark:  d.run.cfg.Rules.Mark,
		AcceptMark:  d.run.cfg.Rules.AcceptMark,
		Repeats:     repeats,
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
	for i, g := range d.gateQ {
		// The generation socket closes once its reader is done with it.
		runReader(func(ctx context.Context) error { defer closeGens[i](); return g.Run(ctx) })
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

// passGenerations is the keeper's side of grants accepted in place
// (rules.Keeper).
type passGenerations interface {
	GrantPassGeneration() (gen uint32, ok bool)
}

// GenerationSource reads the nf_tables ruleset generation
// (rules.GenerationReader).
type GenerationSource interface {
	Generation() (uint32, error)
	Close() error
}

// grantInPlace returns a gate reader's GrantInPlace, and what closes it.
// At a batch's first grant, when the keeper's last read of the tables found
// nothing after the gate's jump in mangle PREROUTING, it reads the
// ruleset generation over a socket of its own: a grant is accepted in
// place (NF_ACCEPT, no second pass through the chain) while the rules
// are still the ones read. check is nil (grants always repeat) where
// the keeper cannot tell or no generation can be read.
func (d *daemon) grantInPlace() (check func() bool, closeFn func()) {
	keeper, ok := d.keeper.(passGenerations)
	if !ok || d.generations == nil {
		return nil, func() {}
	}
	src, err := d.generations()
	if err != nil {
		d.log.Info("grants repeat through mangle PREROUTING: the nf_tables generation cannot be read", zap.Error(err))
		return nil, func() {}
	}
	return func() bool {
		want, ok := keeper.GrantPassGeneration()
		if !ok {
			return false
		}
		gen, err := src.Generation()
		return err == nil && gen == want
	}, func() { src.Close() }
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
	d.decideKnock(src, payload, d.engine.Knock)
}

// refuseKnock runs on the knock reader's receive goroutine for a knock
// the engine said to decide at once (a wrong v2 mac1, a refused version):
// the engine refuses it without a second mac1 check, the daemon logs.
func (d *daemon) refuseKnock(src netip.Addr, payload []byte) {
	d.decideKnock(src, payload, d.engine.KnockAtOnce)
}

// decideKnock has decide decide a knock, and logs and counts it.
func (d *daemon) decideKnock(src netip.Addr, payload []byte, decide func(netip.Addr, []byte) gate.Decision) {
	start := d.engine.Now()
	dec := decide(src, payload)
	end := d.engine.Now()
	d.ops.knockLatency.Observe(end.Sub(start).Seconds())
	d.decisions.knock(src, &dec, start, end, d.engine.OpenDuration())
	if d.hooks.KnockDecided != nil {
		d.hooks.KnockDecided(src, dec)
	}
}
