package livews

// Sluice's own frames as coder/websocket's client decodes them: values at
// hand together leave in one write, in order, at every payload length
// class; pings are answered and both close handshakes still work.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	coderws "github.com/coder/websocket"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// batchExec is an executor whose every operation streams the batches sent
// on values: the values of a batch are at hand together, as a notice's
// events are for runEvents. It flushes (Coalesce) before waiting, as
// graph's runEvents stream does.
type batchExec struct{ values chan []string }

func (e *batchExec) CreateOperationContext(ctx context.Context, p *graphql.RawParams) (*graphql.OperationContext, gqlerror.List) {
	return &graphql.OperationContext{RawQuery: p.Query, RecoverFunc: graphql.DefaultRecover}, nil
}

func (e *batchExec) DispatchOperation(ctx context.Context, rc *graphql.OperationContext) (graphql.ResponseHandler, context.Context) {
	flush := Coalesce(ctx)
	var pending []string
	return func(ctx context.Context) *graphql.Response {
		for len(pending) == 0 {
			flush()
			select {
			case b, ok := <-e.values:
				if !ok {
					return nil
				}
				pending = b
			case <-ctx.Done():
				return nil
			}
		}
		v := pending[0]
		pending = pending[1:]
		return &graphql.Response{Data: json.RawMessage(v)}
	}, ctx
}

func (e *batchExec) DispatchError(ctx context.Context, list gqlerror.List) *graphql.Response {
	return &graphql.Response{Errors: list}
}

type execHandler struct {
	t    Transport
	exec graphql.GraphExecutor
}

func (h execHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.t.Do(w, r, h.exec) }

// liveConn is a client connection and the server's side of it.
type liveConn struct {
	client *coderws.Conn
	server *Conn
	ended  chan struct{} // closed once the server's connection ended
	values chan []string
}

// open dials a connection of proto, reads through connection_ack (and the
// first ka) and starts operation "1".
func open(t *testing.T, ctx context.Context, proto string) *liveConn {
	t.Helper()
	conns := make(chan *Conn, 1)
	exec := &batchExec{values: make(chan []string)}
	tr := Transport{InitFunc: func(ctx context.Context, c *Conn, p InitPayload) (context.Context, error) {
		conns <- c
		return ctx, nil
	}}
	srv := newServer(t, execHandler{tr, exec})
	lc := &liveConn{values: exec.values, ended: make(chan struct{})}
	lc.client = dial(t, ctx, srv, proto, `{"type":"connection_init"}`)
	lc.client.SetReadLimit(1 << 20)
	select {
	case lc.server = <-conns:
	case <-ctx.Done():
		t.Fatal("no connection_init seen")
	}
	lc.server.OnEnd(func() { close(lc.ended) })
	want := []string{`{"type":"connection_ack"}`}
	start := `{"id":"1","type":"subscribe","payload":{"query":"subscription { x }"}}`
	if proto == SubprotocolGraphQLWS {
		want = append(want, `{"type":"ka"}`)
		start = strings.Replace(start, "subscribe", "start", 1)
	}
	for _, w := range want {
		if _, b, err := lc.client.Read(ctx); err != nil || string(b) != w {
			t.Fatalf("got %s (%v), want %s", b, err, w)
		}
	}
	if err := lc.client.Write(ctx, coderws.MessageText, []byte(start)); err != nil {
		t.Fatal(err)
	}
	return lc
}

func newServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// value is a JSON string of n bytes' content: its message is n+46 bytes
// long (with id "1" and type "next").
func value(n int) string { return `"` + strings.Repeat("x", n) + `"` }

func frameText(proto, v string) string {
	t := "next"
	if proto == SubprotocolGraphQLWS {
		t = "data"
	}
	return `{"payload":{"data":` + v + `},"id":"1","type":"` + t + `"}`
}

func readMessages(t *testing.T, ctx context.Context, c *coderws.Conn, proto string, want []string) {
	t.Helper()
	for i, v := range want {
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if w := frameText(proto, v); typ != coderws.MessageText || string(b) != w {
			t.Fatalf("message %d: got %v %.80s... (%d bytes), want %.80s... (%d bytes)", i, typ, b, len(b), w, len(w))
		}
	}
}

// TestCoalescedFrames: a batch of values is one write, and the client
// decodes every message in order, whatever its length's encoding (7-bit up
// to 125, 16-bit from 126 to 65535, 64-bit above).
func TestCoalescedFrames(t *testing.T) {
	for _, proto := range []string{SubprotocolTransportWS, SubprotocolGraphQLWS} {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			lc := open(t, ctx, proto)
			small := []string{value(1), value(79), value(80), `{"a":[1,2,3]}`}
			if n := len(frameText(SubprotocolTransportWS, value(79))); n != 125 {
				t.Fatalf("a value of 79 is a message of %d bytes, want 125", n)
			}
			before := lc.server.raw.writeCount()
			lc.values <- small
			readMessages(t, ctx, lc.client, proto, small)
			if got := lc.server.raw.writeCount() - before; got != 1 {
				t.Fatalf("%d values at hand together took %d writes, want 1", len(small), got)
			}
			// Past coalesceLimit the buffer is written without waiting;
			// everything still arrives whole and in order.
			large := []string{value(65489), value(10), value(65490), value(200000), value(2)}
			lc.values <- large
			readMessages(t, ctx, lc.client, proto, large)
			before = lc.server.raw.writeCount()
			for i := range 3 {
				one := []string{value(i)}
				lc.values <- one
				readMessages(t, ctx, lc.client, proto, one)
			}
			if got := lc.server.raw.writeCount() - before; got != 3 {
				t.Fatalf("3 values one at a time took %d writes, want 3", got)
			}
		})
	}
}

// TestFramesWithPingAndClose: the client's pings are answered between
// Sluice's frames, and the close handshakes run both ways.
func TestFramesWithPingAndClose(t *testing.T) {
	t.Run("ping, then the client closes", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		lc := open(t, ctx, SubprotocolTransportWS)
		got := make(chan string, 100)
		go func() {
			for {
				_, b, err := lc.client.Read(ctx)
				if err != nil {
					close(got)
					return
				}
				got <- string(b)
			}
		}()
		for round := range 3 {
			if err := lc.client.Ping(ctx); err != nil {
				t.Fatalf("ping %d: %v", round, err)
			}
			batch := []string{value(round), value(300), value(round + 1)}
			lc.values <- batch
			for i, v := range batch {
				if m := <-got; m != frameText(SubprotocolTransportWS, v) {
					t.Fatalf("round %d message %d: got %.80s", round, i, m)
				}
			}
		}
		// The client's close: the server answers it (coder/websocket's
		// close frame through rawConn) and its connection ends.
		if err := lc.client.Close(coderws.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		select {
		case <-lc.ended:
		case <-ctx.Done():
			t.Fatal("the server's connection did not end")
		}
		if !lc.server.raw.sentClose() {
			t.Fatal("no close frame seen going out")
		}
		if err := lc.server.raw.writeFrames([]byte{finText, 0}); err == nil {
			t.Fatal("a frame was written after the close frame")
		}
	})
	t.Run("the server closes after values", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		lc := open(t, ctx, SubprotocolTransportWS)
		batch := []string{value(5), value(70000), value(6)}
		lc.values <- batch
		readMessages(t, ctx, lc.client, SubprotocolTransportWS, batch)
		// A second subscribe with the running id closes the socket.
		if err := lc.client.Write(ctx, coderws.MessageText, []byte(`{"id":"1","type":"subscribe","payload":{"query":"subscription { x }"}}`)); err != nil {
			t.Fatal(err)
		}
		rest, code, reason := closed(t, ctx, lc.client)
		if len(rest) != 0 || code != CloseSubscriberExists || reason != "Subscriber for 1 already exists" {
			t.Fatalf("got %q, close %d %q", rest, code, reason)
		}
	})
}

// TestAppendTextFrame checks the header of each length class against the
// bytes RFC 6455 prescribes.
func TestAppendTextFrame(t *testing.T) {
	for _, c := range []struct {
		n    int
		head []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := bytes.Repeat([]byte{'y'}, c.n)
		prev := []byte("before")
		b := appendTextFrame(bytes.Clone(prev), func(b []byte) []byte { return append(b, payload...) })
		want := append(append(prev, c.head...), payload...)
		if !bytes.Equal(b, want) {
			t.Errorf("n=%d: header %v, want %v (total %d, want %d)", c.n, b[len(prev):min(len(b), len(prev)+10)], c.head, len(b), len(want))
		}
	}
}

func ExampleCoalesce() {
	// Outside a livews operation there is nothing to coalesce.
	fmt.Println(Coalesce(context.Background()) == nil)
	// Output: true
}
