package queue

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// receiveErrorPause is how long the receive loop waits after an
// unexpected receive error, so that an error that repeats at once (a
// broken socket) cannot spin a CPU. ENOBUFS does not wait: the reader must
// catch up.
const receiveErrorPause = 10 * time.Millisecond

// bindTimeout bounds the wait for the kernel's answer to the bind.
const bindTimeout = 5 * time.Second

// nfSocket is the kernel's NFQUEUE over a netfilter netlink socket of
// mdlayher/netlink (in the configured namespace). The bind, the receive
// loop and the verdicts are ours rather than go-nfqueue's, whose callback
// API neither says where one receive ends (which batch verdicts need) nor
// lets one read buffer serve every packet; go-nfqueue is left to the
// bench's baseline consumer (internal/bench/nfqaccept).
type nfSocket struct {
	conn  *netlink.Conn
	queue uint16
	recv  receiver      // belongs to the goroutine in bind or Serve
	send  verdictSender // shared by whoever gives verdicts
}

// OpenNFQueue binds the NFQUEUE cfg names: full packet copy up to
// cfg.CopyRange, no fail-open (a full queue drops), NETLINK_NO_ENOBUFS set
// (overruns then show only in the kernel's counters, see
// ReadKernelStats), and the receive buffer forced to cfg.ReadBuffer when
// the process may (CAP_NET_ADMIN), else raised as far as rmem_max allows.
// Packets the kernel queues before it confirmed the bind are dropped (the
// peer retransmits).
func OpenNFQueue(cfg SocketConfig) (Socket, error) {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: cfg.NetNS})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", cfg.Queue, err)
	}
	s, err := newNFSocket(conn, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nfqueue %d: %w", cfg.Queue, err)
	}
	return s, nil
}

func newNFSocket(conn *netlink.Conn, cfg SocketConfig) (*nfSocket, error) {
	if err := conn.SetOption(netlink.NoENOBUFS, true); err != nil {
		return nil, fmt.Errorf("set NETLINK_NO_ENOBUFS: %w", err)
	}
	if cfg.ReadBuffer > 0 {
		if err := setReadBuffer(conn, cfg.ReadBuffer); err != nil {
			return nil, fmt.Errorf("set receive buffer to %d bytes: %w", cfg.ReadBuffer, err)
		}
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &nfSocket{conn: conn, queue: cfg.Queue}
	s.recv.init(raw, int(cfg.CopyRange))
	s.send.init(raw, cfg.Queue)
	if err := s.bind(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// bind binds the queue, sets its copy mode and length in the same message,
// and waits for the kernel's answer.
func (s *nfSocket) bind(cfg SocketConfig) error {
	maxLen := cfg.MaxQueueLen
	if maxLen == 0 {
		maxLen = 1024
	}
	params := binary.BigEndian.AppendUint32(nil, cfg.CopyRange)
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdBind, 0, 0, 0}},
		{Type: nfqaCfgParams, Data: append(params, nfqnlCopyPacket)},
		{Type: nfqaCfgQueueMaxLen, Data: binary.BigEndian.AppendUint32(nil, maxLen)},
	})
	if err != nil {
		return err
	}
	req, err := s.conn.Send(netlink.Message{
		Header: netlink.Header{Type: nfqnlMsgConfig, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(nfGenHeader(cfg.Queue), attrs...),
	})
	if err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := s.conn.SetReadDeadline(time.Now().Add(bindTimeout)); err != nil {
		return err
	}
	defer s.conn.SetReadDeadline(time.Time{})
	for {
		errno, acked, err := s.recv.awaitAck(req.Header.Sequence, &s.send)
		if err != nil {
			return fmt.Errorf("bind: %w", err)
		}
		if acked && errno != 0 {
			return fmt.Errorf("bind: %w", errno)
		}
		if acked {
			return nil
		}
	}
}

// nfGenHeader is struct nfgenmsg for queue: AF_UNSPEC, NFNETLINK_V0.
func nfGenHeader(queue uint16) []byte {
	return binary.BigEndian.AppendUint16([]byte{0, 0}, queue)
}

// Serve implements Socket: it drains the socket into one reused buffer and
// hands each drain to handle, until ctx is done (which sets a read
// deadline in the past to interrupt a waiting read) or the socket fails.
func (s *nfSocket) Serve(ctx context.Context, handle func([]Packet), onError func(error)) error {
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	for ctx.Err() == nil {
		pkts, kernelErr, err := s.recv.receive()
		if len(pkts) > 0 {
			handle(pkts)
		}
		if kernelErr != nil {
			onError(kernelErr)
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return nil // the deadline AfterFunc set
		case errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
			return fmt.Errorf("receive from nfqueue %d: %w", s.queue, err)
		default:
			onError(err)
			if !isENOBUFS(err) {
				time.Sleep(receiveErrorPause)
			}
		}
	}
	return nil
}

// SetVerdict implements Socket.
func (s *nfSocket) SetVerdict(id uint32, verdict int) error {
	return s.send.verdict(id, verdict, 0, false, false)
}

// SetVerdictWithMark implements Socket.
func (s *nfSocket) SetVerdictWithMark(id uint32, verdict int, mark uint32) error {
	return s.send.verdict(id, verdict, mark, true, false)
}

// SetVerdictBatch implements Socket.
func (s *nfSocket) SetVerdictBatch(id uint32, verdict int, mark uint32, withMark bool) error {
	return s.send.verdict(id, verdict, mark, withMark, true)
}

// Close implements Socket: it unbinds the queue (closing the socket would
// too) and closes the socket. Serve has returned by then.
func (s *nfSocket) Close() error {
	attrs, _ := netlink.MarshalAttributes([]netlink.Attribute{{Type: nfqaCfgCmd, Data: []byte{nfqnlCfgCmdUnbind, 0, 0, 0}}})
	_, _ = s.conn.Send(netlink.Message{
		Header: netlink.Header{Type: nfqnlMsgConfig, Flags: netlink.Request},
		Data:   append(nfGenHeader(s.queue), attrs...),
	})
	if err := s.conn.Close(); err != nil {
		return fmt.Errorf("close nfqueue %d: %w", s.queue, err)
	}
	return nil
}

// receiver reads datagrams from the socket into one buffer with room for
// MaxBatch packet messages, one slot each; packets handed out point into
// it.
type receiver struct {
	raw  syscall.RawConn
	buf  []byte
	slot int // the largest message: the copy range plus packetMsgOverhead
	pkts []Packet

	// The state of one read, kept here so that readFn and batchFn, made
	// once, do not allocate a closure per read.
	dst     []byte
	n       int
	err     error
	wait    bool
	readFn  func(fd uintptr) bool
	batch   datagrams // one slot of buf each
	batchFn func(fd uintptr) bool
}

func (r *receiver) init(raw syscall.RawConn, copyRange int) {
	r.raw = raw
	r.slot = align4(copyRange) + packetMsgOverhead
	r.buf = make([]byte, MaxBatch*r.slot)
	r.pkts = make([]Packet, 0, MaxBatch)
	r.readFn = r.read
	r.batch.init(r.buf, r.slot)
	r.batchFn = r.readBatch
}

// read is the RawConn callback: one read(2), waiting for data only when
// r.wait says so.
func (r *receiver) read(fd uintptr) bool {
	for {
		r.n, r.err = readFD(fd, r.dst)
		if r.err != syscall.EINTR {
			break
		}
	}
	return !(r.wait && r.err == syscall.EAGAIN)
}

// readBatch is the RawConn callback of receive: one recvmmsg(2) that
// takes every datagram waiting, up to MaxBatch; when none is, RawConn
// waits for one and calls it again.
func (r *receiver) readBatch(fd uintptr) bool {
	for {
		r.n, r.err = r.batch.read(fd)
		if r.err != syscall.EINTR {
			break
		}
	}
	return r.err != syscall.EAGAIN
}

// readOne reads one datagram into dst; it waits for one when wait is set,
// else it reports ok false when none is there.
func (r *receiver) readOne(dst []byte, wait bool) (n int, ok bool, err error) {
	r.dst, r.wait = dst, wait
	if err := r.raw.Read(r.readFn); err != nil {
		return 0, false, err // a deadline, or the socket closed
	}
	r.dst = nil
	if r.err == syscall.EAGAIN {
		return 0, false, nil
	}
	if r.err != nil {
		return 0, false, r.err
	}
	return r.n, true, nil
}

// receive waits for a datagram and takes it with every one already
// waiting, up to MaxBatch, in one system call (one read(2) per datagram
// cost the gate reader about 3 % of its time under a flood). pkts is
// valid until the next call. kernelErr is a problem the kernel reported
// in a message (a refused verdict, a malformed message); err is a failed
// read.
func (r *receiver) receive() (pkts []Packet, kernelErr, err error) {
	r.pkts = r.pkts[:0]
	if err := r.raw.Read(r.batchFn); err != nil {
		return r.pkts, nil, err // a deadline, or the socket closed
	}
	if r.err != nil {
		return r.pkts, nil, r.err
	}
	for i := range r.n {
		var perr error
		r.pkts, perr = appendPackets(r.pkts, r.buf[i*r.slot:i*r.slot+r.batch.size(i)])
		kernelErr = firstError(kernelErr, perr)
	}
	return r.pkts, kernelErr, nil
}

// awaitAck reads one datagram while binding: it reports the answer to
// request seq when the datagram holds it, and drops the packets queued
// before it.
func (r *receiver) awaitAck(seq uint32, send *verdictSender) (errno syscall.Errno, acked bool, err error) {
	n, _, err := r.readOne(r.buf, true)
	if err != nil {
		return 0, false, err
	}
	b := r.buf[:n]
	for {
		m, rest, ok, err := nextMessage(b)
		if !ok {
			return errno, acked, err
		}
		b = rest
		switch {
		case m.typ == nlmsgError && m.seq == seq:
			if errno, acked = errnoOf(m.data); !acked {
				return 0, false, ErrMalformed
			}
		case m.typ == nfqnlMsgPacket:
			if p, _ := parsePacket(m.data); p.ID != 0 {
				send.verdict(p.ID, NFDrop, 0, false, false)
			}
		}
	}
}

// verdictSender writes verdict messages from one reused buffer.
type verdictSender struct {
	queue   uint16
	raw     syscall.RawConn
	writeFn func(fd uintptr) bool // made once: no closure per verdict

	mu  sync.Mutex // guards msg, n and err
	msg [verdictMaxLen]byte
	n   int
	err error
}

func (v *verdictSender) init(raw syscall.RawConn, queue uint16) {
	v.raw, v.queue = raw, queue
	v.writeFn = v.write
}

// write is the RawConn callback: one write(2) of the message. Netlink
// hands it to the kernel synchronously, so it never waits.
func (v *verdictSender) write(fd uintptr) bool {
	for {
		_, v.err = writeFD(fd, v.msg[:v.n])
		if v.err != syscall.EINTR {
			return v.err != syscall.EAGAIN
		}
	}
}

// verdict sends one verdict message; see putVerdict.
func (v *verdictSender) verdict(id uint32, verdict int, mark uint32, withMark, batch bool) error {
	if !validVerdict(verdict) {
		return fmt.Errorf("nfqueue %d: verdict %d: %w", v.queue, verdict, errInvalidVerdict)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.n = putVerdict(v.msg[:], v.queue, id, verdict, mark, withMark, batch)
	err := v.raw.Write(v.writeFn)
	if err == nil {
		err = v.err
	}
	if err != nil {
		return fmt.Errorf("nfqueue %d: verdict for packet %d: %w", v.queue, id, err)
	}
	return nil
}
