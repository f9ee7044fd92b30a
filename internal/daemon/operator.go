package daemon

import (
	"context"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"sknock/internal/config"
	"sknock/internal/control"
	"sknock/queue"
)

// operator is what sknockd offers its operator besides the log: the
// Prometheus listener (metrics.listen), the control socket
// (control.socket) and the service manager's readiness and watchdog.
type operator struct {
	metrics *metricsServer
	control *control.Server
}

// openOperator binds the metrics listener and the control socket. A
// metrics address that cannot be bound fails the start before sknockd
// changes anything (metrics are asked for explicitly); a control socket
// that cannot be made is logged. They serve from serveOperator on.
func (d *daemon) openOperator(cfg *config.Config, sys OSDeps) (*operator, error) {
	op := &operator{}
	if cfg.MetricsListen != "" {
		m, err := listenMetrics(cfg.MetricsListen)
		if err != nil {
			return nil, err
		}
		op.metrics = m
	}
	if cfg.ControlSocket != "" && sys.ListenControl != nil {
		// The control socket is on by default, so a path that cannot be
		// used does not keep the gate from serving: it is logged, and
		// `sknock grants` and `sknock status` are unavailable.
		ln, err := sys.ListenControl(cfg.ControlSocket)
		if err != nil {
			d.log.Error("no control socket; sknock grants and sknock status cannot reach this sknockd", zap.Error(err))
			return op, nil
		}
		op.control = control.NewServer(control.ServerConfig{
			Listener: ln,
			Path:     cfg.ControlSocket,
			Handle:   d.handleControl,
			PeerUID:  sys.PeerUID,
			Log: control.ServerLog{
				Refused: func(uid uint32, err error) {
					d.log.Warn("control request refused: not root", zap.Uint32("uid", uid), zap.Error(err))
				},
				Failed: func(err error) {
					d.log.Error("control socket failed; sknockd goes on without it", zap.String("socket", cfg.ControlSocket), zap.Error(err))
				},
				Undelivered: func(err error) { d.log.Debug("control answer not delivered", zap.Error(err)) },
			},
		})
	}
	return op, nil
}

// serveOperator starts serving what openOperator bound, and the watchdog
// when the service manager asks for one; they stop with ctx (the
// watchdog is counted in wg).
func (d *daemon) serveOperator(ctx context.Context, op *operator, sys OSDeps, wg *sync.WaitGroup) error {
	if op.metrics != nil {
		reg, err := newMetricsRegistry(d, d.started)
		if err != nil {
			return err
		}
		op.metrics.serve(reg, d.log)
		if d.hooks.MetricsServing != nil {
			d.hooks.MetricsServing(op.metricsAddr().String())
		}
	}
	if op.control != nil {
		op.control.Serve(ctx)
		d.log.Info("control socket listening", zap.String("socket", op.control.Path()))
	}
	var every time.Duration
	if sys.WatchdogEvery != nil {
		every = sys.WatchdogEvery()
	}
	if every > 0 {
		kernel := sys.KernelStats
		if kernel == nil {
			kernel = queue.ReadKernelStats
		}
		probes := d.newGateProbes(d.run.cfg.Rules.GateQueueNumbers())
		wg.Go(func() { d.watchdog(ctx, every, probes, kernel) })
		d.log.Info("watchdog on", zap.Duration("interval", every))
	}
	return nil
}

// close stops the listener and the control socket.
func (op *operator) close() {
	if op == nil {
		return
	}
	op.metrics.close()
	op.control.Close()
}

// metricsAddr is where the metrics listener listens; nil when off.
func (op *operator) metricsAddr() net.Addr {
	if op == nil || op.metrics == nil {
		return nil
	}
	return op.metrics.ln.Addr()
}
