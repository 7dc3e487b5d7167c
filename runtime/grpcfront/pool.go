package main

// The workers a front serves and how a call finds one: each call goes to the ready worker with the
// fewest calls unanswered, so the calls of one HTTP/2 connection (a gRPC channel is usually one)
// spread over every worker of the server, not only over the worker the connection landed on.

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

const (
	workerStopped = "the runtime worker serving this call stopped before answering"
	noWorker      = "no runtime worker is serving yet (starting, or restarting); retry shortly"
)

// worker is one worker's socket and the calls sent on it and not yet answered.
type worker struct {
	conn    net.Conn
	out     chan []byte   // frames to write, batched by write
	done    chan struct{} // closed once the socket is dropped
	pending map[uint32]chan reply
	leaving bool // it asked for no new calls
	ready   bool // its model serves
}

type pool struct {
	mu      sync.Mutex
	next    uint32
	turn    int // where the search for the least busy worker starts: ties take turns
	workers []*worker
	port    uint16 // told to each worker that joins
}

// join adds a worker's socket, says hello (the port served), and serves the socket until it
// closes; then the worker's unanswered calls fail with UNAVAILABLE. Returns why it ended.
func (p *pool) join(conn net.Conn) error {
	w := &worker{
		conn:    conn,
		out:     make(chan []byte, 4096),
		done:    make(chan struct{}),
		pending: make(map[uint32]chan reply),
	}
	w.out <- encodeListening(p.port)
	p.mu.Lock()
	p.workers = append(p.workers, w)
	p.mu.Unlock()
	ended := make(chan error, 2)
	go func() { ended <- w.write() }()
	go func() { ended <- p.read(w) }()
	err := <-ended
	p.drop(w)
	return err
}

func (p *pool) drop(w *worker) {
	p.mu.Lock()
	for i, other := range p.workers {
		if other == w {
			p.workers = append(p.workers[:i], p.workers[i+1:]...)
			break
		}
	}
	pending := w.pending
	w.pending = nil
	p.mu.Unlock()
	close(w.done)
	w.conn.Close()
	for _, ch := range pending {
		ch <- reply{code: codes.Unavailable, message: workerStopped}
	}
}

// pick registers a call with the ready worker that has the fewest unanswered, else (none is ready)
// with any worker not leaving, whose answer says why it cannot serve; nil when there is none. A
// worker still loading answers at once, so were it chosen by its few unanswered calls alone it
// would draw most of them while the others could serve.
func (p *pool) pick() (*worker, uint32, chan reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var best *worker
	for i := range p.workers {
		w := p.workers[(p.turn+i)%len(p.workers)]
		if w.leaving {
			continue
		}
		if best == nil || (w.ready && !best.ready) ||
			(w.ready == best.ready && len(w.pending) < len(best.pending)) {
			best = w
		}
	}
	if best == nil {
		return nil, 0, nil
	}
	p.turn++
	p.next++
	if p.next == stateID {
		p.next++
	}
	ch := make(chan reply, 1)
	best.pending[p.next] = ch
	return best, p.next, ch
}

// forget drops a call whose caller went away; false when it was answered (or failed) meanwhile.
func (p *pool) forget(w *worker, id uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := w.pending[id]
	delete(w.pending, id)
	return ok
}

// send queues a frame for the worker; dropped when its socket is gone (its calls fail there).
func (w *worker) send(frame []byte) {
	select {
	case w.out <- frame:
	case <-w.done:
	}
}

// write writes queued frames, as many as are waiting in each write.
func (w *worker) write() error {
	out := bufio.NewWriterSize(w.conn, 256*1024)
	for {
		var frame []byte
		select {
		case frame = <-w.out:
		case <-w.done:
			return nil
		}
		if _, err := out.Write(frame); err != nil {
			return err
		}
		for more := len(w.out); more > 0; more-- {
			if _, err := out.Write(<-w.out); err != nil {
				return err
			}
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
}

// read hands each answer to its waiting call.
func (p *pool) read(w *worker) error {
	in := bufio.NewReaderSize(w.conn, 256*1024)
	var head [4]byte
	for {
		if _, err := io.ReadFull(in, head[:]); err != nil {
			return err
		}
		frame := make([]byte, binary.BigEndian.Uint32(head[:]))
		if _, err := io.ReadFull(in, frame); err != nil {
			return err
		}
		id, answer, err := decodeReply(frame)
		if err != nil {
			return err
		}
		p.mu.Lock()
		if id == stateID {
			switch answer.code {
			case stateLeaving:
				w.leaving = true
			case stateReady:
				w.ready = true
			case stateNotReady:
				w.ready = false
			}
			p.mu.Unlock()
			continue
		}
		ch, ok := w.pending[id]
		delete(w.pending, id)
		p.mu.Unlock()
		if ok { // a call cancelled meanwhile has no one waiting
			ch <- answer
		}
	}
}

// handle serves any method: the worker answers UNIMPLEMENTED for those it does not have.
func (p *pool) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var body []byte
	if err := stream.RecvMsg(&body); err != nil {
		return err
	}
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	address := ""
	if caller, ok := peer.FromContext(ctx); ok && caller.Addr != nil {
		if host, _, err := net.SplitHostPort(caller.Addr.String()); err == nil {
			address = host
		}
	}
	w, id, ch := p.pick()
	if w == nil {
		return status.Error(codes.Unavailable, noWorker)
	}
	w.send(encodeCall(id, method, address, md, body))
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
		if p.forget(w, id) {
			w.send(encodeHead(id, kindCancel, 0))
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}
