package main

// The frames on a worker's socket (integers big-endian), as docs/protocols.md "The gRPC front"
// writes them down and runtime/mlmodel_runtime/grpc_front.py reads and writes them.

import (
	"encoding/binary"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Frame kinds, front to worker.
const (
	kindListening = 0 // payload: the port the front serves, u16
	kindCall      = 1 // payload: method, peer, metadata, message
	kindCancel    = 2 // no payload: the caller went away
)

// stateID is the call id no call has: a worker's frame with it tells its state in the byte where
// an answer has its status code.
const stateID = 0

// A worker's states. A worker starts not ready (loading its model); calls go to ready workers,
// and to the others only when none is ready, whose answer then says why.
const (
	stateLeaving  = 0 // stopping: no new calls; it still answers the calls it has
	stateReady    = 1
	stateNotReady = 2
)

type reply struct {
	code    codes.Code
	message string
	body    []byte
	trailer metadata.MD
}

func encodeHead(id uint32, kind byte, rest int) []byte {
	frame := make([]byte, 9, 9+rest)
	binary.BigEndian.PutUint32(frame[0:], uint32(5+rest))
	binary.BigEndian.PutUint32(frame[4:], id)
	frame[8] = kind
	return frame
}

func encodeListening(port uint16) []byte {
	return binary.BigEndian.AppendUint16(encodeHead(0, kindListening, 2), port)
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
	if answer.code == codes.OK || id == stateID {
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
		var key, value []byte
		if key, rest, ok = take16(rest); !ok {
			return 0, reply{}, errShortFrame
		}
		if value, rest, ok = take32(rest); !ok {
			return 0, reply{}, errShortFrame
		}
		if answer.trailer == nil {
			answer.trailer = metadata.MD{}
		}
		answer.trailer.Append(string(key), string(value))
	}
	return id, answer, nil
}

// take16 and take32 split a u16- or u32-length-prefixed field from the rest; false when the
// bytes end before the field does.
func take16(b []byte) ([]byte, []byte, bool) {
	if len(b) < 2 || len(b)-2 < int(binary.BigEndian.Uint16(b)) {
		return nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(b))
	return b[2 : 2+n], b[2+n:], true
}

func take32(b []byte) ([]byte, []byte, bool) {
	if len(b) < 4 || uint64(len(b)-4) < uint64(binary.BigEndian.Uint32(b)) {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	return b[4 : 4+n], b[4+n:], true
}
