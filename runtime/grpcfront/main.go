// mlmodel-grpc-front terminates gRPC (HTTP/2) for one runtime worker and hands every call, as the
// bytes it arrived with, to that worker over a Unix socket the worker gave it (file descriptor
// --fd). The worker parses the message, runs it through the data plane and answers with the
// serialized response or a gRPC status. This process knows no method and no message type: the
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
	"bufio"
	"context"
	"encoding/binary"
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
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Frame kinds, front to worker.
const (
	kindListening = 0 // payload: the port bound, u16
	kindCall      = 1 // payload: method, peer, metadata, message
	kindCancel    = 2 // no payload: the caller went away
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

type reply struct {
	code    codes.Code
	message string
	body    []byte
	trailer metadata.MD
}

// bridge multiplexes calls over the worker's socket: one writer goroutine batches frames into few
// writes, one reader goroutine hands each answer to its waiting call.
type bridge struct {
	out     chan []byte
	mu      sync.Mutex
	next    uint32
	pending map[uint32]chan reply
}

func newBridge() *bridge {
	return &bridge{out: make(chan []byte, 4096), pending: make(map[uint32]chan reply)}
}

func (b *bridge) register() (uint32, chan reply) {
	ch := make(chan reply, 1)
	b.mu.Lock()
	b.next++
	if b.next == 0 {
		b.next = 1
	}
	id := b.next
	b.pending[id] = ch
	b.mu.Unlock()
	return id, ch
}

func (b *bridge) forget(id uint32) {
	b.mu.Lock()
	delete(b.pending, id)
	b.mu.Unlock()
}

func (b *bridge) write(conn io.Writer) error {
	w := bufio.NewWriterSize(conn, 256*1024)
	for frame := range b.out {
		if _, err := w.Write(frame); err != nil {
			return err
		}
		for more := len(b.out); more > 0; more-- {
			if _, err := w.Write(<-b.out); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (b *bridge) read(conn io.Reader) error {
	r := bufio.NewReaderSize(conn, 256*1024)
	var head [4]byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return err
		}
		frame := make([]byte, binary.BigEndian.Uint32(head[:]))
		if _, err := io.ReadFull(r, frame); err != nil {
			return err
		}
		id, answer, err := decodeReply(frame)
		if err != nil {
			return err
		}
		b.mu.Lock()
		ch, ok := b.pending[id]
		delete(b.pending, id)
		b.mu.Unlock()
		if ok { // a call cancelled meanwhile has no one waiting
			ch <- answer
		}
	}
}

// handle serves any method: the worker answers UNIMPLEMENTED for those it does not have.
func (b *bridge) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var body []byte
	if err := stream.RecvMsg(&body); err != nil {
		return err
	}
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	address := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			address = host
		}
	}
	id, ch := b.register()
	b.out <- encodeCall(id, method, address, md, body)
	select {
	case answer := <-ch:
		if answer.code == codes.OK {
			return stream.SendMsg(&answer.body)
		}
		if len(answer.trailer) > 0 {
			stream.SetTrailer(answer.trailer)
		}
		return status.Error(answer.code, answer.message)
	case <-ctx.Done():
		b.forget(id)
		b.out <- encodeHead(id, kindCancel, 0)
		return status.FromContextError(ctx.Err()).Err()
	}
}

func encodeHead(id uint32, kind byte, rest int) []byte {
	frame := make([]byte, 9, 9+rest)
	binary.BigEndian.PutUint32(frame[0:], uint32(5+rest))
	binary.BigEndian.PutUint32(frame[4:], id)
	frame[8] = kind
	return frame
}

func encodeCall(id uint32, method, address string, md metadata.MD, body []byte) []byte {
	size := 2 + len(method) + 2 + len(address) + 2 + len(body)
	pairs := 0
	for key, values := range md {
		for _, value := range values {
			size += 2 + len(key) + 4 + len(value)
			pairs++
		}
	}
	frame := encodeHead(id, kindCall, size)
	frame = appendString16(frame, method)
	frame = appendString16(frame, address)
	frame = binary.BigEndian.AppendUint16(frame, uint16(pairs))
	for key, values := range md {
		for _, value := range values {
			frame = appendString16(frame, key)
			frame = binary.BigEndian.AppendUint32(frame, uint32(len(value)))
			frame = append(frame, value...)
		}
	}
	return append(frame, body...)
}

func appendString16(frame []byte, s string) []byte {
	frame = binary.BigEndian.AppendUint16(frame, uint16(len(s)))
	return append(frame, s...)
}

var errShortFrame = errors.New("a frame from the worker ends early")

// decodeReply reads id, u8 code, then the message bytes (OK) or the status message and trailer.
func decodeReply(frame []byte) (uint32, reply, error) {
	if len(frame) < 5 {
		return 0, reply{}, errShortFrame
	}
	id := binary.BigEndian.Uint32(frame)
	answer := reply{code: codes.Code(frame[4])}
	rest := frame[5:]
	if answer.code == codes.OK {
		answer.body = rest
		return id, answer, nil
	}
	message, rest, ok := take32(rest)
	if !ok || len(rest) < 2 {
		return 0, reply{}, errShortFrame
	}
	answer.message = string(message)
	count := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	for ; count > 0; count-- {
		if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
			return 0, reply{}, errShortFrame
		}
		key := string(rest[2 : 2+int(binary.BigEndian.Uint16(rest))])
		var value []byte
		value, rest, ok = take32(rest[2+len(key):])
		if !ok {
			return 0, reply{}, errShortFrame
		}
		if answer.trailer == nil {
			answer.trailer = metadata.MD{}
		}
		answer.trailer.Append(key, string(value))
	}
	return id, answer, nil
}

func take32(b []byte) ([]byte, []byte, bool) {
	if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	return b[4 : 4+n], b[4+n:], true
}

func listen(address string, reusePort bool) (net.Listener, error) {
	config := net.ListenConfig{}
	if reusePort {
		config.Control = func(_, _ string, conn syscall.RawConn) error {
			var err error
			if cerr := conn.Control(func(fd uintptr) {
				err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); cerr != nil {
				return cerr
			}
			return err
		}
	}
	return config.Listen(context.Background(), "tcp", address)
}

func main() {
	address := flag.String("listen", "0.0.0.0:8081", "host:port to serve gRPC on (port 0: any)")
	fd := flag.Int("fd", 3, "the worker's end of the Unix socket, inherited")
	maxReceive := flag.Int("max-receive-bytes", 10*1024*1024, "largest request message accepted")
	reusePort := flag.Bool("reuse-port", false, "share the port with the other workers (SO_REUSEPORT)")
	grace := flag.Duration("grace", 30*time.Second, "on SIGTERM, how long calls in flight may take")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("mlmodel-grpc-front: ")
	// One front per worker, and a worker is one core's work: one P keeps the front from spinning
	// idle threads on cores the workers need. Garbage is small and short-lived; collecting it
	// a quarter as often cut the front's CPU per call (186 to 149 µs in one noisy A/B on the
	// project's 2-core machine, 2026-12-03).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}

	conn, err := net.FileConn(os.NewFile(uintptr(*fd), "worker"))
	if err != nil {
		log.Fatalf("fd %d is not the worker's socket: %v", *fd, err)
	}
	listener, err := listen(*address, *reusePort)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *address, err)
	}
	b := newBridge()
	_, port, _ := net.SplitHostPort(listener.Addr().String())
	number, _ := strconv.Atoi(port)
	hello := encodeHead(0, kindListening, 2)
	b.out <- binary.BigEndian.AppendUint16(hello, uint16(number))

	server := grpc.NewServer(
		grpc.ForceServerCodec(encoding.Codec(rawCodec{})),
		grpc.UnknownServiceHandler(b.handle),
		grpc.MaxRecvMsgSize(*maxReceive),
		grpc.MaxSendMsgSize(1<<31-1),
		// Goroutines that serve one call after another keep the stack a call grew (new ones
		// start small and copy it as it grows); a call waits on the worker, so enough of them
		// for the concurrent calls of one worker.
		grpc.NumStreamWorkers(256),
		// Fixed flow-control windows: without them grpc-go estimates the bandwidth-delay product
		// with a PING on incoming data, a write and a read more per call.
		grpc.InitialWindowSize(1<<20),
		grpc.InitialConnWindowSize(1<<22),
	)
	done := make(chan error, 3)
	go func() { done <- fmt.Errorf("writing to the worker: %w", b.write(conn)) }()
	go func() { done <- fmt.Errorf("reading from the worker: %w", b.read(conn)) }()
	go func() { done <- server.Serve(listener) }()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-signals:
		// New calls are refused; calls in flight still reach the worker, which keeps answering.
		stopped := make(chan struct{})
		go func() { server.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(*grace):
			server.Stop()
		}
	case err := <-done:
		if errors.Is(err, io.EOF) { // the worker closed its end: it is stopping or gone
			server.Stop()
			return
		}
		server.Stop()
		log.Fatal(err)
	}
}
