package connwatch

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"sknock/gate"
	"sknock/packet"
)

// fakeConntrack is a conntrack table held in memory: Dump returns live,
// WatchDestroyed delivers what destroy sends and fails when fail is
// closed (events lost).
type fakeConntrack struct {
	mu      sync.Mutex
	live    []gate.Conn
	dumps   int
	destroy chan gate.Conn
	fail    chan error
}

func (f *fakeConntrack) Dump() ([]gate.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dumps++
	return append([]gate.Conn(nil), f.live...), nil
}

func (f *fakeConntrack) WatchDestroyed(ctx context.Context, out chan<- gate.Conn) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-f.fail:
			return err
		case c := <-f.destroy:
			out <- c
		}
	}
}

// fakeRecord records what the watcher told it.
type fakeRecord struct {
	forgotten chan gate.Conn
	prunes    chan map[gate.Conn]struct{}
	full      chan struct{}
}

func (r *fakeRecord) ForgetConn(c gate.Conn) bool { r.forgotten <- c; return true }
func (r *fakeRecord) PruneConns(live map[gate.Conn]struct{}, _ time.Time) int {
	r.prunes <- live
	return 0
}
func (r *fakeRecord) ConnsFull() <-chan struct{} { return r.full }

// TestWatcher: a destroyed connection is forgotten; the record is pruned
// against the dump at the start, on request, when full, and after the
// event socket fails (events lost).
func TestWatcher(t *testing.T) {
	c1 := gate.Conn{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.2:40000"), Dst: netip.MustParseAddrPort("198.18.0.1:22")}
	ct := &fakeConntrack{live: []gate.Conn{c1}, destroy: make(chan gate.Conn), fail: make(chan error)}
	rec := &fakeRecord{forgotten: make(chan gate.Conn, 1), prunes: make(chan map[gate.Conn]struct{}, 1), full: make(chan struct{}, 1)}
	w := New(ct, rec)
	w.Every = time.Hour
	failed := make(chan error, 4)
	w.Failed = func(err error) { failed <- err }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	wait := func(what string) map[gate.Conn]struct{} {
		t.Helper()
		select {
		case live := <-rec.prunes:
			return live
		case <-time.After(5 * time.Second):
			t.Fatalf("no prune %s", what)
		}
		return nil
	}
	if live := wait("at the start"); len(live) != 1 {
		t.Errorf("pruned against %v, want the dump's one connection", live)
	}
	ct.destroy <- c1
	if got := <-rec.forgotten; got != c1 {
		t.Errorf("forgot %v, want %v", got, c1)
	}
	w.PruneSoon()
	wait("on request")
	rec.full <- struct{}{}
	wait("when full")
	ct.fail <- errors.New("ENOBUFS")
	wait("after lost events")
	if err := <-failed; err == nil {
		t.Error("the lost events were not reported")
	}
}

// TestConnOf: a conntrack event's tuple is the gate's, IPv4 unmapped.
func TestConnOf(t *testing.T) {
	var f conntrack.Flow
	f.TupleOrig.IP.SourceAddress = netip.MustParseAddr("::ffff:198.18.0.5")
	f.TupleOrig.IP.DestinationAddress = netip.MustParseAddr("198.18.0.1")
	f.TupleOrig.Proto.Protocol = 6
	f.TupleOrig.Proto.SourcePort = 40000
	f.TupleOrig.Proto.DestinationPort = 2000
	want := gate.Conn{Proto: packet.TCP, Src: netip.MustParseAddrPort("198.18.0.5:40000"), Dst: netip.MustParseAddrPort("198.18.0.1:2000")}
	if got := ConnOf(f); got != want {
		t.Errorf("ConnOf = %v, want %v", got, want)
	}
}
