package gate

import (
	"sync/atomic"
	"time"
)

// logLimiter lets through at most perSecond log lines each second and
// counts the rest, so a flood cannot fill a disk. It is lock-free: the
// packet path pays two atomic operations, and formats nothing unless the
// limiter said yes.
type logLimiter struct {
	perSecond  int64
	second     atomic.Int64 // the Unix second the count belongs to
	count      atomic.Int64
	suppressed atomic.Uint64 // lines refused since the last report
}

// allow reports whether a line may be written at now, and, when a new
// second starts, how many lines the previous ones suppressed.
func (l *logLimiter) allow(now time.Time) (ok bool, suppressed uint64) {
	sec := now.Unix()
	if cur := l.second.Load(); cur != sec && l.second.CompareAndSwap(cur, sec) {
		l.count.Store(0)
		suppressed = l.suppressed.Swap(0)
	}
	if l.count.Add(1) <= l.perSecond {
		return true, suppressed
	}
	l.suppressed.Add(1)
	return false, suppressed
}
