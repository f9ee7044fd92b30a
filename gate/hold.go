package gate

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"sknock/packet"
)

// Defaults of HolderConfig's zero fields.
const (
	// DefaultMaxHeld bounds the packets held at once; the hold queue's
	// kernel bound should be the same, so that Hold never waits.
	DefaultMaxHeld = 64
	// DefaultMaxHeldPerSource bounds one source's share, so that one
	// address with knocks in the workers cannot take every slot.
	DefaultMaxHeldPerSource = 4
	// DefaultHoldTimeout is the longest a packet waits for its knock: a
	// knock is decided in well under a millisecond unless the knock
	// workers are backed up, and then the packet is decided as if it had
	// never been held.
	DefaultHoldTimeout = 10 * time.Millisecond
)

// HeldPacket is a packet Engine.Verdict deferred, as the hold queue's
// reader hands it over: the kernel's id and mark, which Settle needs, and
// the decoded header (without payload).
type HeldPacket struct {
	ID, Mark uint32
	Header   packet.Header
}

// HolderConfig configures a Holder.
type HolderConfig struct {
	// Settle gives a held packet its final verdict (never Defer). Only
	// the goroutine of Holder.Run calls it, so the hold queue is answered
	// from one goroutine. Required.
	Settle func(p *HeldPacket, v packet.Verdict)
	// MaxHeld bounds the packets deferred and not yet settled; zero:
	// DefaultMaxHeld. Beyond it Engine.Verdict decides at once, as if
	// nothing were pending, so that holding costs at most this many
	// packets' work however many SYNs race their knocks.
	MaxHeld int
	// MaxHeldPerSource bounds one source's share; zero:
	// DefaultMaxHeldPerSource.
	MaxHeldPerSource int
	// Timeout is the longest a packet is held; zero: DefaultHoldTimeout.
	Timeout time.Duration
}

// Holder owns the packets that race their own knock: Engine.Verdict
// defers them, the gate reader moves them to the hold queue (so the gate
// queue keeps answering in batches), the hold queue's reader passes them
// to Hold, and Run settles each once its source's knock is decided or its
// time is up. All its state belongs to Run's goroutine.
type Holder struct {
	e    *Engine
	cfg  HolderConfig
	in   chan HeldPacket
	held []heldPacket // capacity MaxHeld, made once
}

// heldPacket is one held packet with its deadline.
type heldPacket struct {
	HeldPacket
	deadline time.Time
}

// holdStats are the Holder's counters, kept in the Engine's Stats.
type holdStats struct {
	timeouts  atomic.Uint64
	overflows atomic.Uint64
}

// NewHolder returns the engine's Holder; from now on Verdict may defer.
// Call it once, before packets flow.
func (e *Engine) NewHolder(cfg HolderConfig) (*Holder, error) {
	if cfg.Settle == nil {
		return nil, errors.New("gate: holder config: Settle is nil")
	}
	if cfg.MaxHeld < 0 || cfg.MaxHeldPerSource < 0 || cfg.Timeout < 0 {
		return nil, errors.New("gate: holder config: bounds must not be negative")
	}
	if cfg.MaxHeld == 0 {
		cfg.MaxHeld = DefaultMaxHeld
	}
	if cfg.MaxHeldPerSource == 0 {
		cfg.MaxHeldPerSource = DefaultMaxHeldPerSource
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultHoldTimeout
	}
	h := &Holder{
		e:    e,
		cfg:  cfg,
		in:   make(chan HeldPacket, cfg.MaxHeld),
		held: make([]heldPacket, 0, cfg.MaxHeld),
	}
	e.decided = make(chan struct{}, 1)
	e.deferPerSource, e.deferTotal = int32(cfg.MaxHeldPerSource), int32(cfg.MaxHeld)
	return h, nil
}

// Hold hands a deferred packet to Run. The hold queue's reader calls it
// for every packet it receives. With the hold queue's kernel bound at
// most MaxHeld, every packet the kernel can have waiting fits in the
// channel or the table, so Hold does not wait; if it ever must, it waits
// until ctx is done.
func (h *Holder) Hold(ctx context.Context, p HeldPacket) {
	p.Header.Payload = nil
	select {
	case h.in <- p:
	case <-ctx.Done():
	}
}

// Run settles held packets until ctx is done: when their knock is
// decided, when their time is up, and at once when the knock was decided
// before they arrived or the table is full. Packets still held when it
// returns are dropped by the kernel as their queue closes.
func (h *Holder) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	// A deferred packet that never arrives (its verdict was refused)
	// would keep its slot: after a quiet second with nothing held, the
	// slots are given back.
	idle := time.NewTicker(idleReset)
	defer idle.Stop()
	quiet := true
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-h.in:
			quiet = false
			h.add(p)
		case <-h.e.decided:
			h.settle()
		case <-timer.C:
			h.settle()
		case <-idle.C:
			if quiet && len(h.held) == 0 {
				h.e.pending.resetDeferred()
			}
			quiet = true
		}
		if next, ok := h.nextDeadline(); ok {
			timer.Reset(max(next.Sub(h.e.clock()), time.Microsecond))
		}
	}
}

// idleReset is how long the Holder must hold nothing before it gives
// back deferral slots whose packets never arrived.
const idleReset = time.Second

// add holds p if a knock of its source is still pending (and, as a
// safeguard, the table has room), else settles it at once.
func (h *Holder) add(p HeldPacket) {
	now := h.e.clock()
	if !h.e.pending.has(p.Header.Src) || len(h.held) == cap(h.held) {
		h.finish(&p, now, false)
		return
	}
	h.held = append(h.held, heldPacket{HeldPacket: p, deadline: now.Add(h.cfg.Timeout)})
}

// settle decides every held packet whose source has no knock pending any
// more (one was just decided; the source may have another) and every one
// whose time is up, and keeps the rest. At most MaxHeld lookups.
func (h *Holder) settle() {
	now := h.e.clock()
	kept := h.held[:0]
	for i := range h.held {
		hp := &h.held[i]
		timedOut := !now.Before(hp.deadline)
		if !timedOut && h.e.pending.has(hp.Header.Src) {
			kept = append(kept, *hp)
			continue
		}
		h.finish(&hp.HeldPacket, now, timedOut)
	}
	clear(h.held[len(kept):])
	h.held = kept
}

// finish decides a held packet as if it had never been deferred, gives
// back its slot, counts it and sends its verdict.
func (h *Holder) finish(p *HeldPacket, now time.Time, timedOut bool) {
	v, granted := h.e.verdict(&p.Header, now)
	if timedOut && !granted {
		h.e.stats.holds.timeouts.Add(1)
	}
	h.e.pending.undefer(p.Header.Src)
	h.e.count(v, granted)
	h.cfg.Settle(p, v)
}

// nextDeadline returns the earliest deadline of the held packets.
func (h *Holder) nextDeadline() (time.Time, bool) {
	var next time.Time
	for i := range h.held {
		if next.IsZero() || h.held[i].deadline.Before(next) {
			next = h.held[i].deadline
		}
	}
	return next, !next.IsZero()
}
