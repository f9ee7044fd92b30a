package daemon

import (
	"context"
	"fmt"
	"strconv"
	"time"

	sd "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"sknock/gate"
	"sknock/queue"
)

// Notifier tells the service manager about sknockd's state, one
// sd_notify(3) message at a time ("READY=1", "STATUS=..."). Without
// NOTIFY_SOCKET (not started by systemd) it does nothing.
type Notifier func(state string) error

// sdNotify is the real notifier: go-systemd's sd.SdNotify on the
// NOTIFY_SOCKET systemd gave.
func sdNotify(state string) error {
	_, err := sd.SdNotify(false, state)
	return err
}

// sdWatchdogEvery returns the watchdog interval systemd asks for
// (WatchdogSec=, through WATCHDOG_USEC), or zero when there is none.
func sdWatchdogEvery() time.Duration {
	every, err := sd.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return every
}

// notify sends state, if there is a notifier; a failure is logged once
// per kind of message at debug level (a service manager that went away
// is not sknockd's problem).
func (d *daemon) notify(state string) {
	if d.notifier == nil {
		return
	}
	if err := d.notifier(state); err != nil {
		d.log.Debug("sd_notify failed", zap.String("state", state), zap.Error(err))
	}
}

// notifyReady tells the service manager that sknockd serves: both queues
// are bound and the rules are in place (Serve calls it only then).
func (d *daemon) notifyReady(what string) {
	d.notify("READY=1\nSTATUS=" + what)
}

// notifyReloading starts a reload (Type=notify-reload waits for the READY
// that ends it); MONOTONIC_USEC is the CLOCK_MONOTONIC time systemd
// matches with its own reload request.
func (d *daemon) notifyReloading() {
	d.notify("RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(monotonicUsec(), 10) + "\nSTATUS=reloading " + d.run.cfg.Path)
}

// notifyReloaded ends a reload, applied or refused: either way sknockd
// serves (a refused reload keeps the configuration in force).
func (d *daemon) notifyReloaded(err error) {
	status := "serving; configuration reloaded"
	if err != nil {
		status = "serving; reload refused, previous configuration in force: " + err.Error()
	}
	d.notify("READY=1\nSTATUS=" + status)
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

// gateProbe follows one gate queue for the watchdog: what the kernel
// handed to its socket and what its reader took.
type gateProbe struct {
	queue  uint16
	reader func() uint64 // packets (and unparsable messages) the reader took
	// base* are the first check's readings; delivered is what the kernel
	// had handed to the socket by the previous check, counted from base.
	baseID, baseUserDropped uint32
	baseTaken               uint64
	delivered               uint64
	started                 bool
}

// check reports whether the reader took, by now, every packet the kernel
// had handed to its socket by the previous check. A reader that waits in
// a receive on an idle queue passes (nothing was handed to it); one stuck
// in a verdict send or in a decision does not, once a packet arrives for
// it, because it takes nothing more. kernel reads the queue's counters.
func (p *gateProbe) check(kernel func(uint16) (queue.KernelStats, error)) error {
	st, err := kernel(p.queue)
	if err != nil {
		return err
	}
	taken := p.reader()
	if !p.started {
		p.baseID, p.baseUserDropped, p.baseTaken, p.started = st.IDSequence, uint32(st.UserDropped), taken, true
		return nil
	}
	defer func() {
		// Ids count every packet the kernel handed over, those it then
		// dropped for a full socket buffer included (uint32: they wrap).
		p.delivered = uint64(st.IDSequence-p.baseID) - uint64(uint32(st.UserDropped)-p.baseUserDropped)
	}()
	if got := taken - p.baseTaken; got < p.delivered {
		return fmt.Errorf("gate queue %d: its reader took %d of the %d packets the kernel handed it by the last check", p.queue, got, p.delivered)
	}
	return nil
}

// watchdog sends WATCHDOG=1 every interval for as long as every gate
// queue's reader keeps taking the packets the kernel hands it (see
// gateProbe.check), and STATUS= lines with the counters. When a check
// fails it sends nothing more, so that systemd restarts sknockd (its
// rules stay: the ports stay closed meanwhile). Checks run every
// interval/2 (systemd's advice); interval is WatchdogSec.
func (d *daemon) watchdog(ctx context.Context, interval time.Duration, probes []*gateProbe, kernel func(uint16) (queue.KernelStats, error)) {
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var err error
		for _, p := range probes {
			if err = p.check(kernel); err != nil {
				break
			}
		}
		if err != nil {
			if !failing {
				d.log.Error("gate not answering: watchdog stopped, systemd will restart sknockd (rules kept, ports closed meanwhile)", zap.Error(err))
			}
			failing = true
			if d.hooks.Watchdog != nil {
				d.hooks.Watchdog(err)
			}
			continue
		}
		failing = false
		s := d.engine.Snapshot()
		d.notify(fmt.Sprintf("WATCHDOG=1\nSTATUS=serving: %d grants, %d knocks granted", s.Grants, s.Knocks[gate.ReasonNone.String()]))
		if d.hooks.Watchdog != nil {
			d.hooks.Watchdog(nil)
		}
	}
}

// newGateProbes returns a probe for every gate reader.
func (d *daemon) newGateProbes(queues []uint16) []*gateProbe {
	probes := make([]*gateProbe, 0, len(d.gateQ))
	for i, g := range d.gateQ {
		st := g.Stats()
		probes = append(probes, &gateProbe{
			queue:  queues[i],
			reader: func() uint64 { return st.Packets.Load() + st.ReceiveErrors.Load() },
		})
	}
	return probes
}
