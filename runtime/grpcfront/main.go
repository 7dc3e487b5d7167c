// mlmodel-grpc-front terminates gRPC (HTTP/2) for the runtime's workers and hands every call, as
// the bytes it arrived with, to a worker over a Unix socket: the one socket a lone worker gave it
// (--fd), or, under the supervisor of several workers, the sockets of the workers that connect to
// it (--workers-fd), each call to the ready worker with the fewest calls unanswered (pool.go). The
// worker parses the message, runs it through the data plane and answers with the serialized
// response or a gRPC status. This process knows no method and no message type: the
// Open Inference Protocol lives in the worker alone (runtime/mlmodel_runtime/grpc_server.py).
//
// Why: grpc.aio spends most of a small call's CPU handing it between its own threads and the
// event loop under the GIL. Here HTTP/2 costs Go's CPU, and the worker reads whole calls from one
// socket on its event loop, as it reads HTTP requests.
//
// The framing on the socket (integers big-endian) is written down in docs/protocols.md, "The gRPC
// front"; runtime/mlmodel_runtime/grpc_front.py is the other end.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
)

// rawCodec passes messages through as bytes; it registers under "proto" so clients' default
// content-type (application/grpc, application/grpc+proto) is accepted.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }

func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...) // grpc may reuse data once this returns
	return nil
}

func (rawCodec) Name() string { return "proto" }

func main() {
	address := flag.String("listen", "0.0.0.0:8081", "host:port to serve gRPC on (port 0: any)")
	listenFD := flag.Int("listen-fd", -1, "serve gRPC on this inherited listening socket instead")
	fd := flag.Int("fd", 3, "the one worker's end of a Unix socket, inherited")
	workersFD := flag.Int("workers-fd", -1,
		"an inherited listening Unix socket workers connect to, instead of --fd; the front then "+
			"serves until SIGTERM or until its standard input closes (the supervisor is gone)")
	maxReceive := flag.Int("max-receive-bytes", 10*1024*1024, "largest request message accepted")
	grace := flag.Duration("grace", 30*time.Second, "on SIGTERM, how long calls in flight may take")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("mlmodel-grpc-front: ")
	// A worker is one core's work: beside one worker the front runs Go code on one thread
	// (GOMAXPROCS=1) so it does not spin idle threads on the core the worker needs; the
	// supervisor of several sets GOMAXPROCS for the front it shares. Garbage is small and
	// short-lived; collecting it a quarter as often cut the front's CPU per call (186 to 149 µs
	// in one noisy A/B on the project's 2-core machine, 2026-12-03).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}

	var listener net.Listener
	var err error
	if *listenFD >= 0 {
		listener, err = net.FileListener(os.NewFile(uintptr(*listenFD), "grpc"))
	} else {
		listener, err = net.Listen("tcp", *address)
	}
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *address, err)
	}
	_, port, _ := net.SplitHostPort(listener.Addr().String())
	number, _ := strconv.Atoi(port)
	workers := &pool{port: uint16(number)}

	server := grpc.NewServer(
		grpc.ForceServerCodec(encoding.Codec(rawCodec{})),
		grpc.UnknownServiceHandler(workers.handle),
		grpc.MaxRecvMsgSize(*maxReceive),
		grpc.MaxSendMsgSize(1<<31-1),
		// Goroutines that serve one call after another keep the stack a call grew (new ones
		// start small and copy it as it grows); a call waits on a worker, so enough of them
		// for the concurrent calls of the workers.
		grpc.NumStreamWorkers(256),
		// Fixed flow-control windows: without them grpc-go estimates the bandwidth-delay product
		// with a PING on incoming data, a write and a read more per call.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<22),
	)
	done := make(chan error, 2)
	go func() { done <- server.Serve(listener) }()
	if *workersFD >= 0 {
		go func() { done <- acceptWorkers(workers, *workersFD) }()
		go func() { // the supervisor holds the other end of standard input
			_, _ = io.Copy(io.Discard, os.Stdin)
			done <- io.EOF
		}()
	} else {
		conn, err := net.FileConn(os.NewFile(uintptr(*fd), "worker"))
		if err != nil {
			log.Fatalf("fd %d is not the worker's socket: %v", *fd, err)
		}
		go func() { done <- fmt.Errorf("serving the worker: %w", workers.join(conn)) }()
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-signals:
		// New calls are refused; calls in flight still reach their workers, which keep answering.
		stopped := make(chan struct{})
		go func() { server.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(*grace):
			server.Stop()
		}
	case err := <-done:
		server.Stop()
		// EOF: the one worker closed its end (it is stopping or gone), or the supervisor did.
		if !errors.Is(err, io.EOF) {
			log.Fatal(err)
		}
	}
}

// acceptWorkers adds each worker that connects to the pool; a worker's socket that ends only
// takes that worker out (its supervisor starts it again, and it connects again).
func acceptWorkers(workers *pool, fd int) error {
	listener, err := net.FileListener(os.NewFile(uintptr(fd), "workers"))
	if err != nil {
		return fmt.Errorf("fd %d is not a listening Unix socket: %w", fd, err)
	}
	for {
		conn, err := listener.Accept()
		if err != nil {
			return fmt.Errorf("accepting workers: %w", err)
		}
		go func() {
			if err := workers.join(conn); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				log.Printf("a worker's socket ended: %v", err)
			}
		}()
	}
}
