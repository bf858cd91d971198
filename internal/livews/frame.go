package livews

// Sluice's own server-to-client websocket frames (RFC 6455, section 5.2).
// coder/websocket writes one frame per message and flushes each, so a
// commit's three events were three writes to every subscriber's socket.
// Here a message becomes a frame in the connection's buffer (a server's
// frames are not masked: the FIN and opcode byte, the payload length, the
// payload) and the waiting frames leave in one write on the hijacked
// connection.
//
// coder/websocket keeps its part of the connection: it reads the hijacked
// connection, answers pings and runs the close handshake. Its writes (pong
// and close frames only: Sluice never calls its Write) go through
// rawConn.Write, which serialises them with Sluice's frames. A control
// frame is at most 127 bytes and coder/websocket flushes its buffer after
// each one, so each of its writes is whole frames and never interleaves with
// Sluice's. Once its close frame went out, Sluice's frames are dropped: no
// data frame may follow a close. Messages are never compressed (the
// transport does not enable permessage-deflate; an uncompressed frame is
// valid even where it is negotiated).

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
)

const (
	finText    = 0x80 | 0x1 // FIN, opcode text
	opcodeMask = 0x0f
	opClose    = 0x8

	// frameHeaderMax is the longest header of an unmasked frame: 2 bytes
	// and a 64-bit length.
	frameHeaderMax = 10
)

// appendTextFrame appends one final, unmasked text frame whose payload is
// what build appends. The payload is built after room for the longest
// header, then moved next to the header it needs.
func appendTextFrame(b []byte, build func([]byte) []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeaderMax)...)
	b = build(b)
	n := len(b) - start - frameHeaderMax
	var h [frameHeaderMax]byte
	hdr := appendFrameHeader(h[:0], finText, n)
	if gap := frameHeaderMax - len(hdr); gap > 0 {
		copy(b[start+len(hdr):], b[start+frameHeaderMax:])
		b = b[:len(b)-gap]
	}
	copy(b[start:], hdr)
	return b
}

// appendFrameHeader appends the header of an unmasked frame of n payload
// bytes: 7-bit, 16-bit or 64-bit length.
func appendFrameHeader(b []byte, first byte, n int) []byte {
	switch {
	case n < 126:
		return append(b, first, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, first, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, first, 127), uint64(n))
	}
}

// rawConn is the hijacked connection of one websocket.
type rawConn struct {
	net.Conn
	mu        sync.Mutex
	closeSent bool // a close frame was written: nothing may follow
	writes    int  // writes of Sluice's frames (tests count them)
}

// Write is coder/websocket's: whole control frames, a pong or the close.
func (r *rawConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(p) > 0 && p[0]&opcodeMask == opClose {
		r.closeSent = true
	}
	return r.Conn.Write(p)
}

// writeFrames writes whole frames with one write, unless the close frame
// went out. A failed write closes the connection (a write cut half-way
// leaves the stream unusable), so the connection's read fails and it ends.
func (r *rawConn) writeFrames(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closeSent {
		return net.ErrClosed
	}
	r.writes++
	if _, err := r.Conn.Write(p); err != nil {
		_ = r.Conn.Close()
		return err
	}
	return nil
}

// sentClose reports whether the close frame went out.
func (r *rawConn) sentClose() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closeSent
}

// writeCount returns how many writes of Sluice's frames were made.
func (r *rawConn) writeCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.writes
}

// hijackWriter hands coder/websocket's Accept a rawConn in place of the
// hijacked connection, under the write buffer the server hijacked with.
type hijackWriter struct {
	http.ResponseWriter
	raw *rawConn
}

func (w *hijackWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hijacks the underlying connection (through any wrappers' Unwrap)
// and returns it as a rawConn.
func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if brw.Writer.Buffered() > 0 {
		// The handshake's response, if the server left it buffered.
		if err := brw.Writer.Flush(); err != nil {
			_ = nc.Close()
			return nil, nil, err
		}
	}
	w.raw = &rawConn{Conn: nc}
	brw.Writer.Reset(w.raw) // the same buffer, writing through rawConn
	return w.raw, brw, nil
}
