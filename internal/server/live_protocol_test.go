package server

// The websocket transport (internal/livews) as clients of both protocols
// see it: the exact bytes of a frame, ping/pong, a client's complete, a
// reused operation id, errors of an operation, and the legacy graphql-ws.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	coderws "github.com/coder/websocket"
)

// readMsg reads the next message that is not a ping or pong, raw.
func readMsg(t *testing.T, ctx context.Context, conn *coderws.Conn) (wsMessage, string) {
	t.Helper()
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %s: %v", b, err)
		}
		if m.Type == "ping" || m.Type == "pong" || m.Type == "ka" {
			continue
		}
		return m, string(b)
	}
}

// TestWebsocketFrames: a next frame is the response's data between the
// fixed prefix and suffix, with the operation's id quoted as JSON; pings
// are answered with their payload; a reused id of a running operation
// closes the socket with 4409.
func TestWebsocketFrames(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	conn := l.dial(t, ctx)
	send(t, ctx, conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+l.token(t, "u1", "viewer")+`"}}`)
	if m, raw := readMsg(t, ctx, conn); m.Type != "connection_ack" || raw != `{"type":"connection_ack"}` {
		t.Fatalf("first message %s, want connection_ack", raw)
	}
	id := `a"<1>`
	qid, _ := json.Marshal(id)
	sub := func(id []byte) string {
		return `{"id":` + string(id) + `,"type":"subscribe","payload":{"query":"` + runEventsQuery + `","variables":{"id":"` + l.runID + `"}}}`
	}
	send(t, ctx, conn, sub(qid))
	_, raw := readMsg(t, ctx, conn)
	want := `{"payload":{"data":{"runEvents":{"seq":1,"type":"run.queued"}}},"id":` + string(qid) + `,"type":"next"}`
	if raw != want {
		t.Fatalf("frame\n%s\nwant\n%s", raw, want)
	}

	// A ping is answered with a pong carrying its payload.
	send(t, ctx, conn, `{"type":"ping","payload":{"n":1}}`)
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `"type":"pong"`) {
			if string(b) != `{"payload":{"n":1},"type":"pong"}` {
				t.Fatalf("pong %s", b)
			}
			break
		}
	}

	// An operation with errors: an error or next message with errors for
	// its id, then complete; the connection goes on.
	send(t, ctx, conn, `{"id":"bad","type":"subscribe","payload":{"query":"subscription { nothing }"}}`)
	m, raw := readMsg(t, ctx, conn)
	if m.ID != "bad" || (m.Type != "error" && m.Type != "next") || !strings.Contains(raw, "nothing") {
		t.Fatalf("invalid operation got %s", raw)
	}
	if m, raw := readMsg(t, ctx, conn); m.ID != "bad" || m.Type != "complete" {
		t.Fatalf("invalid operation then %s, want complete", raw)
	}

	// The run stays queued: the first operation is still running.
	send(t, ctx, conn, sub(qid))
	if got := readUntilClose(t, ctx, conn); got != 4409 {
		t.Fatalf("reused id: close code %d, want 4409", got)
	}
}

// TestWebsocketClientComplete: a client's complete ends its operation and
// frees its id for a new one.
func TestWebsocketClientComplete(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	conn := l.dial(t, ctx)
	send(t, ctx, conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+l.token(t, "u1", "viewer")+`"}}`)
	readMsg(t, ctx, conn) // connection_ack
	sub := `{"id":"1","type":"subscribe","payload":{"query":"` + runEventsQuery + `","variables":{"id":"` + l.runID + `"}}}`
	send(t, ctx, conn, sub)
	if m, raw := readMsg(t, ctx, conn); m.Type != "next" {
		t.Fatalf("got %s, want next", raw)
	}
	send(t, ctx, conn, `{"id":"1","type":"complete"}`)
	// The server completes it too; the id is then free again (not 4409).
	if m, raw := readMsg(t, ctx, conn); m.Type != "complete" || m.ID != "1" {
		t.Fatalf("after complete: %s", raw)
	}
	send(t, ctx, conn, sub)
	if m, raw := readMsg(t, ctx, conn); m.Type != "next" || m.ID != "1" {
		t.Fatalf("subscribing again after complete: %s", raw)
	}
}

// TestWebsocketLegacyGraphQLWS: a graphql-ws client gets connection_ack
// and ka, data messages for start, and stop ends the operation; a refused
// credential gets connection_error before the close.
func TestWebsocketLegacyGraphQLWS(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	dial := func() *coderws.Conn {
		conn, _, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(l.url, "http")+"/graphql",
			&coderws.DialOptions{Subprotocols: []string{"graphql-ws"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		if conn.Subprotocol() != "graphql-ws" {
			t.Fatalf("subprotocol %q", conn.Subprotocol())
		}
		return conn
	}
	conn := dial()
	send(t, ctx, conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+l.token(t, "u1", "viewer")+`"}}`)
	for i, want := range []string{`{"type":"connection_ack"}`, `{"type":"ka"}`} {
		_, b, err := conn.Read(ctx)
		if err != nil || string(b) != want {
			t.Fatalf("message %d: %s (%v), want %s", i, b, err, want)
		}
	}
	send(t, ctx, conn, `{"id":"7","type":"start","payload":{"query":"`+runEventsQuery+`","variables":{"id":"`+l.runID+`"}}}`)
	_, raw := readMsg(t, ctx, conn)
	if want := `{"payload":{"data":{"runEvents":{"seq":1,"type":"run.queued"}}},"id":"7","type":"data"}`; raw != want {
		t.Fatalf("frame %s, want %s", raw, want)
	}
	send(t, ctx, conn, `{"id":"7","type":"stop"}`)
	if m, raw := readMsg(t, ctx, conn); m.Type != "complete" || m.ID != "7" {
		t.Fatalf("after stop: %s, want complete", raw)
	}
	send(t, ctx, conn, `{"type":"connection_terminate"}`)
	if got := readUntilClose(t, ctx, conn); got != coderws.StatusNormalClosure {
		t.Fatalf("terminate: close code %d", got)
	}

	refused := dial()
	send(t, ctx, refused, `{"type":"connection_init","payload":{"token":"garbage"}}`)
	m, raw := readMsg(t, ctx, refused)
	if m.Type != "connection_error" || !strings.Contains(raw, "message") {
		t.Fatalf("refused credential got %s, want connection_error", raw)
	}
	if got := readUntilClose(t, ctx, refused); got != closeUnauthorized {
		t.Fatalf("refused credential: close code %d, want %d", got, closeUnauthorized)
	}
}

// TestStreamStopEndsWithComplete: a client's stop (or complete) always ends
// its stream with a plain completion. The stop cancels the stream's context,
// which also closes its hub subscription; the stream used to read the
// closed subscription as the hub dropping a slow subscriber now and then,
// and answered with a RATE_LIMITED error instead.
func TestStreamStopEndsWithComplete(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	conn, _, err := coderws.Dial(ctx, "ws"+strings.TrimPrefix(l.url, "http")+"/graphql",
		&coderws.DialOptions{Subprotocols: []string{"graphql-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	send(t, ctx, conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+l.token(t, "u1", "viewer")+`"}}`)
	for range 2 { // connection_ack, ka
		if _, _, err := conn.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		id := fmt.Sprintf("s%d", i)
		send(t, ctx, conn, `{"id":"`+id+`","type":"start","payload":{"query":"`+runEventsQuery+`","variables":{"id":"`+l.runID+`"}}}`)
		if m, raw := readMsg(t, ctx, conn); m.Type != "data" || m.ID != id {
			t.Fatalf("start %d: %s", i, raw)
		}
		send(t, ctx, conn, `{"id":"`+id+`","type":"stop"}`)
		if m, raw := readMsg(t, ctx, conn); m.Type != "complete" || m.ID != id {
			t.Fatalf("stop %d: %s, want complete", i, raw)
		}
	}
}
