// Package livews owns Sluice's GraphQL websocket transport: the
// graphql-transport-ws protocol (and the legacy graphql-ws) on
// coder/websocket, for subscriptions and any operation sent over a socket.
//
// It speaks the protocols as gqlgen's transport.Websocket does (connection
// init and its refusal, connection_ack, ping/pong and keep-alive,
// subscribe/next/error/complete, the close codes), with three differences
// that matter at a thousand subscribers of one run:
//
//   - A protocol message is encoded once, straight into the connection's
//     write buffer: a `next` message is the prefix, the operation's
//     pre-quoted id and the response's data bytes (often the same bytes for
//     every subscriber, see graph.FrameCache) appended in place. gqlgen
//     JSON-encodes the response, then encodes the protocol message around
//     it again (validating and copying the data twice).
//   - The operation's goroutine writes its frames itself; for runEvents it
//     also takes the events off the Hub (graph.LiveUpdates), so a frame
//     leaves one goroutine hand-off after the notice arrives.
//   - Server-to-client frames are Sluice's own (frame.go): a message's
//     frame header is put before it in the connection's buffer, and the
//     frames waiting there leave in one write on the hijacked connection.
//     An operation that opted in with Coalesce keeps its frames there until
//     its source has nothing more at hand, so a commit's events reach a
//     subscriber in one write instead of one write per event (coder/websocket
//     flushes every message it writes). coder/websocket still does the
//     handshake, reads the client's frames, answers pings and runs the close
//     handshake.
//   - Keep-alive pings and the end of a connection's context are timers and
//     context callbacks, not goroutines parked per connection.
//
// A graphql-transport-ws subscribe that reuses the id of a running operation
// closes the socket with 4409, as the protocol requires.
package livews

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	coderws "github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// Subprotocols.
const (
	SubprotocolTransportWS = "graphql-transport-ws"
	SubprotocolGraphQLWS   = "graphql-ws" // legacy (subscriptions-transport-ws)
)

// Close codes.
const (
	CloseNormal            = 1000
	CloseProtocolError     = 1002
	CloseBadRequest        = 4400
	CloseSubscriberExists  = 4409
	defaultPayloadReadSize = 1 << 20
)

// InitPayload is the payload of connection_init.
type InitPayload map[string]any

// GetString returns the string at key, or "".
func (p InitPayload) GetString(key string) string {
	s, _ := p[key].(string)
	return s
}

// Authorization returns the "Authorization" (or "authorization") entry.
func (p InitPayload) Authorization() string {
	if v := p.GetString("Authorization"); v != "" {
		return v
	}
	return p.GetString("authorization")
}

// InitError refuses a connection_init: Message goes to the client (as
// connection_error on graphql-ws; graphql-transport-ws has no such
// message), then the socket closes with Code and Reason.
type InitError struct {
	Code    int
	Reason  string
	Message string
}

func (e *InitError) Error() string { return e.Message }

// InitFunc authenticates a connection from its connection_init payload and
// returns the context its operations run in. A refusal is an *InitError
// (any other error closes with 1000 "terminated", as gqlgen does).
type InitFunc func(ctx context.Context, c *Conn, p InitPayload) (context.Context, error)

// Transport is the websocket transport. Its zero durations disable what
// they time.
type Transport struct {
	AcceptOptions coderws.AcceptOptions
	InitFunc      InitFunc
	// InitTimeout bounds the wait for connection_init.
	InitTimeout time.Duration
	// KeepAliveInterval spaces graphql-ws "ka" messages.
	KeepAliveInterval time.Duration
	// PingInterval spaces graphql-transport-ws pings. A missing pong is not
	// an error (proxies see traffic; TCP keep-alive finds dead peers).
	PingInterval time.Duration
	// PayloadReadLimit bounds a message read from the client; 0 is 1 MiB,
	// a negative value disables the limit.
	PayloadReadLimit int64
}

var _ graphql.Transport = Transport{}

// Supports reports a websocket handshake.
func (t Transport) Supports(r *http.Request) bool { return r.Header.Get("Upgrade") != "" }

// Do serves one websocket connection until it ends; the socket is closed
// whatever path it returns by.
func (t Transport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	opts := t.AcceptOptions
	for _, p := range []string{SubprotocolGraphQLWS, SubprotocolTransportWS} {
		if !slices.Contains(opts.Subprotocols, p) {
			opts.Subprotocols = append(opts.Subprotocols, p)
		}
	}
	hw := &hijackWriter{ResponseWriter: w}
	ws, err := coderws.Accept(hw, r, &opts)
	if err != nil {
		return // Accept wrote the HTTP error
	}
	if hw.raw == nil {
		// Not through Hijack: nothing to write frames on.
		_ = ws.CloseNow()
		return
	}
	limit := t.PayloadReadLimit
	if limit == 0 {
		limit = defaultPayloadReadSize
	}
	if limit > 0 {
		ws.SetReadLimit(limit)
	} else {
		ws.SetReadLimit(-1)
	}
	c := &Conn{t: t, ws: ws, raw: hw.raw, exec: exec, headers: r.Header, active: map[string]context.CancelFunc{}}
	c.proto = protoGraphQLWS
	if ws.Subprotocol() == SubprotocolTransportWS {
		c.proto = protoTransportWS
	}
	c.ctx = context.WithValue(r.Context(), connKey{}, c)
	c.serve()
	c.Close(CloseNormal, "terminated")
	c.mu.Lock()
	ends := c.onEnd
	c.onEnd, c.ended = nil, true
	c.mu.Unlock()
	for _, f := range ends {
		f()
	}
}

type proto int

const (
	protoGraphQLWS proto = iota
	protoTransportWS
)

// Conn is one websocket connection.
type Conn struct {
	t       Transport
	ws      *coderws.Conn // the handshake, reads, pongs and the close handshake
	raw     *rawConn      // the hijacked connection Sluice's frames are written on
	exec    graphql.GraphExecutor
	headers http.Header
	proto   proto
	ctx     context.Context // the connection's; InitFunc's once accepted
	init    InitPayload

	wmu sync.Mutex // serialises writes; guards buf
	buf []byte     // frames not written yet, in order

	mu      sync.Mutex
	active  map[string]context.CancelFunc
	closed  bool
	ended   bool
	onEnd   []func()
	pinger  *time.Timer
	stopCtx func() bool
}

type connKey struct{}

// ConnFrom returns the websocket connection ctx belongs to (InitFunc's
// context and the operations' carry it), or nil.
func ConnFrom(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

// InitPayloadFrom returns the connection_init payload of the connection
// ctx belongs to.
func InitPayloadFrom(ctx context.Context) InitPayload {
	if c := ConnFrom(ctx); c != nil {
		return c.init
	}
	return nil
}

// OnEnd runs f once the connection has ended (at once if it has).
func (c *Conn) OnEnd(f func()) {
	c.mu.Lock()
	if !c.ended {
		c.onEnd = append(c.onEnd, f)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	f()
}

// Close closes the connection with code and reason; only the first close
// counts. The running operations are cancelled. The close handshake runs in
// the background (coder/websocket waits up to 5s for the peer's close).
func (c *Conn) Close(code int, reason string) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	for _, cancel := range c.active {
		cancel()
	}
	if c.pinger != nil {
		c.pinger.Stop()
	}
	stop := c.stopCtx
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	go func() { _ = c.ws.Close(coderws.StatusCode(code), reason) }()
}

// message is one protocol message read from the client.
type message struct {
	Type    string          `json:"type"`
	ID      string          `json:"id,omitempty"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

var errInvalidJSON = errors.New("invalid json")

// next reads the client's next message: errInvalidJSON for a message that
// is not a JSON object, the read error when the socket fails or closes.
func (c *Conn) next(ctx context.Context) (message, error) {
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		return message{}, err
	}
	var m message
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return message{}, errInvalidJSON
	}
	return m, nil
}

// Server-side message types.
const (
	tAck       = "connection_ack"
	tConnError = "connection_error"
	tKeepAlive = "ka"
	tComplete  = "complete"
	tError     = "error"
	tPing      = "ping"
	tPong      = "pong"
)

func (c *Conn) nextType() string {
	if c.proto == protoTransportWS {
		return "next"
	}
	return "data"
}

// serve runs the connection: init, then messages until it ends.
func (c *Conn) serve() {
	if !c.initialise() {
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	c.mu.Lock()
	// The connection's context ending (shutdown, a cut stream) closes it.
	c.stopCtx = context.AfterFunc(ctx, func() { c.Close(CloseNormal, "terminated") })
	switch {
	case c.proto == protoGraphQLWS && c.t.KeepAliveInterval > 0:
		c.pinger = c.every(c.t.KeepAliveInterval, func() { c.writeMessage(tKeepAlive, "", nil) })
	case c.proto == protoTransportWS && c.t.PingInterval > 0:
		c.pinger = c.every(c.t.PingInterval, func() { c.writeMessage(tPing, "", nil) })
	}
	c.mu.Unlock()
	for {
		start := graphql.Now()
		m, err := c.next(context.Background())
		if err != nil {
			return // closed, or a frame that is not JSON: the connection ends
		}
		switch c.clientType(m.Type) {
		case "subscribe":
			if !c.subscribe(start, m) {
				return
			}
		case "stop":
			c.mu.Lock()
			cancel := c.active[m.ID]
			c.mu.Unlock()
			if cancel != nil {
				cancel()
			}
		case "terminate":
			c.Close(CloseNormal, "terminated")
			return
		case tPing:
			c.writeMessage(tPong, "", m.Payload)
		case tPong:
		case "init":
			c.connectionError("unexpected message init")
			c.Close(CloseProtocolError, "unexpected message")
			return
		default:
			return // not a client message of this protocol
		}
	}
}

// every runs f every d until the connection closes.
func (c *Conn) every(d time.Duration, f func()) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		f()
		c.mu.Lock()
		if !c.closed {
			t.Reset(d)
		}
		c.mu.Unlock()
	})
	return t
}

// clientType maps a client message type of the connection's protocol to
// init, subscribe, stop, terminate, ping or pong ("" when unknown).
func (c *Conn) clientType(t string) string {
	if c.proto == protoTransportWS {
		switch t {
		case "connection_init":
			return "init"
		case "subscribe":
			return "subscribe"
		case "complete":
			return "stop"
		case tPing, tPong:
			return t
		}
		return ""
	}
	switch t {
	case "connection_init":
		return "init"
	case "start":
		return "subscribe"
	case "stop":
		return "stop"
	case "connection_terminate":
		return "terminate"
	}
	return ""
}

// initialise waits for connection_init and runs InitFunc.
func (c *Conn) initialise() bool {
	if c.t.InitTimeout > 0 {
		// A timer, not a read deadline: coder/websocket drops the
		// connection without a close frame when a read's context ends.
		timeout := time.AfterFunc(c.t.InitTimeout, func() { c.Close(CloseProtocolError, "connection initialisation timeout") })
		defer timeout.Stop()
	}
	m, err := c.next(context.Background())
	switch {
	case errors.Is(err, errInvalidJSON):
		c.connectionError("invalid json")
		c.Close(CloseProtocolError, "decoding error")
		return false
	case err != nil:
		c.Close(CloseProtocolError, "decoding error")
		return false
	}
	switch c.clientType(m.Type) {
	case "init":
	case "terminate":
		c.Close(CloseNormal, "terminated")
		return false
	case "":
		c.Close(CloseProtocolError, "decoding error")
		return false
	default:
		c.connectionError("unexpected message " + map[string]string{"subscribe": "start", "stop": "stop subscription"}[c.clientType(m.Type)])
		c.Close(CloseProtocolError, "unexpected message")
		return false
	}
	if len(m.Payload) > 0 && !bytes.Equal(m.Payload, []byte("null")) {
		if err := json.Unmarshal(m.Payload, &c.init); err != nil {
			c.Close(CloseBadRequest, "connection_init payload must be a JSON object")
			return false
		}
	}
	if c.t.InitFunc != nil {
		ctx, err := c.t.InitFunc(c.ctx, c, c.init)
		if err != nil {
			var ie *InitError
			if !errors.As(err, &ie) {
				ie = &InitError{Code: CloseNormal, Reason: "terminated", Message: err.Error()}
			}
			c.connectionError(ie.Message)
			c.Close(ie.Code, ie.Reason)
			return false
		}
		c.ctx = ctx
	}
	c.writeMessage(tAck, "", nil)
	if c.proto == protoGraphQLWS {
		c.writeMessage(tKeepAlive, "", nil)
	}
	return true
}

// subscribe starts an operation; false ends the connection.
func (c *Conn) subscribe(start time.Time, m message) bool {
	id := m.ID
	ctx := graphql.StartOperationTrace(c.ctx)
	params := &graphql.RawParams{}
	d := json.NewDecoder(bytes.NewReader(m.Payload))
	d.UseNumber()
	if err := d.Decode(params); err != nil {
		c.sendError(id, &gqlerror.Error{Message: "invalid json"})
		c.complete(id)
		return true
	}
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}
	params.Headers = c.headers
	rc, errList := c.exec.CreateOperationContext(ctx, params)
	if errList != nil {
		resp := c.exec.DispatchError(graphql.WithOperationContext(ctx, rc), errList)
		switch errcode.GetErrorKind(errList) {
		case errcode.KindProtocol:
			c.sendError(id, resp.Errors...)
		default:
			c.sendResponse(id, &graphql.Response{Errors: errList})
		}
		c.complete(id)
		return true
	}
	ctx = graphql.WithOperationContext(ctx, rc)
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	if _, dup := c.active[id]; dup && c.proto == protoTransportWS {
		c.mu.Unlock()
		cancel()
		c.Close(CloseSubscriberExists, "Subscriber for "+id+" already exists")
		return false
	}
	if c.closed {
		c.mu.Unlock()
		cancel()
		return false
	}
	c.active[id] = cancel
	c.mu.Unlock()
	op := &operation{c: c, id: id, quotedID: quote(id)}
	ctx = context.WithValue(ctx, operationKey{}, op)
	go op.run(ctx, rc, cancel)
	return true
}

// operation is one running operation of a connection.
type operation struct {
	c        *Conn
	id       string
	quotedID []byte // the id as a JSON string, encoded once
	// coalesce: the operation's values stay in the connection's buffer
	// until its source calls flush (see Coalesce).
	coalesce atomic.Bool
}

type operationKey struct{}

// Coalesce makes the values of ctx's operation wait in its connection's
// buffer instead of being written one by one, so that values that are at
// hand together (the events of one commit) leave in one write. It returns
// the flush the operation's source must call, on the operation's goroutine
// (the one asking for its responses), before it waits for anything: a
// notice, a database read. The buffer is also written when it grows past
// 64 KiB, when any other message of the connection is written, and when
// the operation ends. Outside a livews operation it returns nil.
func Coalesce(ctx context.Context) (flush func()) {
	op, ok := ctx.Value(operationKey{}).(*operation)
	if !ok {
		return nil
	}
	op.coalesce.Store(true)
	return op.c.flush
}

func (op *operation) run(ctx context.Context, rc *graphql.OperationContext, cancel context.CancelFunc) {
	c := op.c
	defer func() {
		if r := recover(); r != nil {
			err := rc.Recover(ctx, r)
			var gerr *gqlerror.Error
			if !errors.As(err, &gerr) {
				gerr = &gqlerror.Error{}
				if err != nil {
					gerr.Message = err.Error()
				}
			}
			c.sendError(op.id, gerr)
		}
		c.mu.Lock()
		delete(c.active, op.id) // first: a complete frees the id
		c.mu.Unlock()
		cancel()
		if c.ctx.Err() == nil {
			// A cancelled connection closes the socket; complete would
			// signal a normal end.
			c.write(func(b []byte) []byte { return appendMessage(b, tComplete, op.quotedID, nil) })
		} else {
			c.flush() // values still waiting go before the close
		}
	}()
	responses, ctx := c.exec.DispatchOperation(ctx, rc)
	for {
		resp := responses(ctx)
		if resp == nil {
			return
		}
		op.send(resp)
	}
}

// send writes resp as the operation's next message. A response of data
// alone (every value of a healthy stream) is written without encoding: its
// data bytes, which gqlgen rendered (or graph.FrameCache shares), go
// between a fixed prefix and suffix.
func (op *operation) send(resp *graphql.Response) {
	c := op.c
	t := c.nextType()
	if len(resp.Errors) == 0 && len(resp.Extensions) == 0 && resp.Label == "" && resp.Path == nil && resp.HasNext == nil &&
		len(resp.Data) > 0 && json.Valid(resp.Data) {
		c.queue(!op.coalesce.Load(), func(b []byte) []byte {
			b = append(b, `{"payload":{"data":`...)
			b = append(b, resp.Data...)
			b = append(b, `},"id":`...)
			b = append(b, op.quotedID...)
			b = append(b, `,"type":"`...)
			b = append(b, t...)
			return append(b, `"}`...)
		})
		return
	}
	c.sendResponse(op.id, resp)
}

// sendResponse writes resp as id's next message, encoded.
func (c *Conn) sendResponse(id string, resp *graphql.Response) {
	p, err := json.Marshal(resp)
	if err != nil {
		c.sendError(id, &gqlerror.Error{Message: "response could not be encoded"})
		return
	}
	c.writeMessage(c.nextType(), id, p)
}

func (c *Conn) complete(id string) { c.writeMessage(tComplete, id, nil) }

func (c *Conn) sendError(id string, errs ...*gqlerror.Error) {
	p, err := json.Marshal(errs)
	if err != nil {
		p = []byte(`[{"message":"error could not be encoded"}]`)
	}
	c.writeMessage(tError, id, p)
}

// connectionError tells a graphql-ws client why its connection ends
// (graphql-transport-ws has no such message).
func (c *Conn) connectionError(msg string) {
	if c.proto != protoGraphQLWS {
		return
	}
	p, _ := json.Marshal(&gqlerror.Error{Message: msg})
	c.writeMessage(tConnError, "", p)
}

// writeMessage writes a message; payload, if any, is JSON already.
func (c *Conn) writeMessage(t, id string, payload []byte) {
	var qid []byte
	if id != "" {
		qid = quote(id)
	}
	c.write(func(b []byte) []byte { return appendMessage(b, t, qid, payload) })
}

// write builds a message as a text frame in the connection's buffer and
// writes the buffer (the frames waiting there first).
func (c *Conn) write(build func([]byte) []byte) { c.queue(true, build) }

// coalesceLimit is the size of waiting frames that is written without
// waiting for a flush.
const coalesceLimit = 64 << 10

// queue builds a message as a text frame after the frames waiting in the
// connection's buffer; with flush, or once the buffer passed
// coalesceLimit, it writes them all in one write.
func (c *Conn) queue(flush bool, build func([]byte) []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.buf = appendTextFrame(c.buf, build)
	if flush || len(c.buf) >= coalesceLimit {
		c.flushLocked()
	}
}

// flush writes the frames waiting in the connection's buffer.
func (c *Conn) flush() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
}

// flushLocked writes the waiting frames with one write. Errors end nothing
// here: a failed write closes the socket, whose read then fails, which ends
// the connection. c.wmu is held.
func (c *Conn) flushLocked() {
	if len(c.buf) == 0 {
		return
	}
	_ = c.raw.writeFrames(c.buf)
	if cap(c.buf) <= coalesceLimit*2 {
		c.buf = c.buf[:0] // kept for the next messages; a huge one is not kept
	} else {
		c.buf = nil
	}
}

// appendMessage appends {"payload":...,"id":"...","type":"..."} (the field
// order gqlgen's transport writes), leaving out an empty payload or id.
func appendMessage(b []byte, t string, quotedID, payload []byte) []byte {
	b = append(b, '{')
	if len(payload) > 0 {
		b = append(b, `"payload":`...)
		b = append(b, payload...)
		b = append(b, ',')
	}
	if len(quotedID) > 0 {
		b = append(b, `"id":`...)
		b = append(b, quotedID...)
		b = append(b, ',')
	}
	b = append(b, `"type":"`...)
	b = append(b, t...)
	return append(b, `"}`...)
}

// quote returns s as a JSON string, as encoding/json writes it.
func quote(s string) []byte {
	b, _ := json.Marshal(s)
	return b
}
