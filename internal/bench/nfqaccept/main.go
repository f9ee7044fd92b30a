// Command nfqaccept is the baseline scripts/bench.sh compares the gate
// with: the least a go-nfqueue program can do with a queue — give every
// packet the same verdict, with the socket settings sknockd's gate reader
// uses (copy range, queue length, NETLINK_NO_ENOBUFS, 8 MiB buffer).
//
//	nfqaccept -queue 101 [-drop] [-for 60s]
package main

import (
	"context"
	"flag"
	"log"
	"os/signal"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func main() {
	queue := flag.Uint("queue", 101, "NFQUEUE number")
	drop := flag.Bool("drop", false, "drop every packet instead of accepting it")
	limit := flag.Duration("for", time.Minute, "exit after this long (a bound for the benchmark)")
	flag.Parse()
	verdict := nfqueue.NfAccept
	if *drop {
		verdict = nfqueue.NfDrop
	}
	nf, err := nfqueue.Open(&nfqueue.Config{NfQueue: uint16(*queue), MaxQueueLen: 4096, MaxPacketLen: 256, Copymode: nfqueue.NfQnlCopyPacket})
	if err != nil {
		log.Fatal(err)
	}
	defer nf.Close()
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		log.Fatal(err)
	}
	if raw, err := nf.Con.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) })
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *limit)
	defer cancel()
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID != nil {
			nf.SetVerdict(*a.PacketID, verdict)
		}
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, func(error) int { return 0 }); err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()
}
