package livews

// Connection setup as a client sees it, before any operation runs (the
// operations themselves are tested through the API in internal/server).

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	coderws "github.com/coder/websocket"
)

const deadline = 20 * time.Second

func serve(t *testing.T, tr Transport) string {
	t.Helper()
	srv := httptest.NewServer(httpHandler{tr})
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

// dial opens a connection with the given subprotocol and sends messages.
func dial(t *testing.T, ctx context.Context, url, proto string, messages ...string) *coderws.Conn {
	t.Helper()
	conn, _, err := coderws.Dial(ctx, url, &coderws.DialOptions{Subprotocols: []string{proto}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	for _, m := range messages {
		if err := conn.Write(ctx, coderws.MessageText, []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// closed reads until the server closes and returns the messages read and
// the close status.
func closed(t *testing.T, ctx context.Context, conn *coderws.Conn) ([]string, coderws.StatusCode, string) {
	t.Helper()
	var got []string
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("still open after %s (read %q)", deadline, got)
			}
			var ce coderws.CloseError
			reason := ""
			if errors.As(err, &ce) {
				reason = ce.Reason
			}
			return got, coderws.CloseStatus(err), reason
		}
		got = append(got, string(b))
	}
}

func TestInitRefusals(t *testing.T) {
	refuse := func(ctx context.Context, c *Conn, p InitPayload) (context.Context, error) {
		if p.Authorization() == "ok" {
			return ctx, nil
		}
		return ctx, &InitError{Code: 4401, Reason: "unauthorized", Message: "bad credential"}
	}
	url := serve(t, Transport{InitFunc: refuse, InitTimeout: 200 * time.Millisecond})
	cases := []struct {
		name, proto string
		messages    []string
		want        []string
		code        coderws.StatusCode
		reason      string
	}{
		{"no init in time", SubprotocolTransportWS, nil, nil, CloseProtocolError, "connection initialisation timeout"},
		{"not JSON", SubprotocolTransportWS, []string{`{`}, nil, CloseProtocolError, "decoding error"},
		{"not JSON, graphql-ws", SubprotocolGraphQLWS, []string{`{`}, []string{`{"payload":{"message":"invalid json"},"type":"connection_error"}`}, CloseProtocolError, "decoding error"},
		{"payload not an object", SubprotocolTransportWS, []string{`{"type":"connection_init","payload":[1]}`}, nil, CloseBadRequest, "connection_init payload must be a JSON object"},
		{"refused", SubprotocolTransportWS, []string{`{"type":"connection_init","payload":{"Authorization":"no"}}`}, nil, 4401, "unauthorized"},
		{"refused, graphql-ws", SubprotocolGraphQLWS, []string{`{"type":"connection_init","payload":{"Authorization":"no"}}`}, []string{`{"payload":{"message":"bad credential"},"type":"connection_error"}`}, 4401, "unauthorized"},
		{"subscribe first", SubprotocolTransportWS, []string{`{"id":"1","type":"subscribe","payload":{}}`}, nil, CloseProtocolError, "unexpected message"},
		{"terminate first, graphql-ws", SubprotocolGraphQLWS, []string{`{"type":"connection_terminate"}`}, nil, CloseNormal, "terminated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			conn := dial(t, ctx, url, c.proto, c.messages...)
			got, code, reason := closed(t, ctx, conn)
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") || code != c.code || reason != c.reason {
				t.Fatalf("got %q, close %d %q; want %q, close %d %q", got, code, reason, c.want, c.code, c.reason)
			}
		})
	}
}

// TestKeepAlive: an accepted graphql-ws connection gets connection_ack, ka
// and then ka on its interval; graphql-transport-ws gets pings.
func TestKeepAlive(t *testing.T) {
	url := serve(t, Transport{KeepAliveInterval: 20 * time.Millisecond, PingInterval: 20 * time.Millisecond})
	for proto, want := range map[string][]string{
		SubprotocolGraphQLWS:   {`{"type":"connection_ack"}`, `{"type":"ka"}`, `{"type":"ka"}`, `{"type":"ka"}`},
		SubprotocolTransportWS: {`{"type":"connection_ack"}`, `{"type":"ping"}`, `{"type":"ping"}`},
	} {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			conn := dial(t, ctx, url, proto, `{"type":"connection_init"}`)
			for i, w := range want {
				_, b, err := conn.Read(ctx)
				if err != nil || string(b) != w {
					t.Fatalf("message %d: %s (%v), want %s", i, b, err, w)
				}
			}
		})
	}
}

func TestAppendMessage(t *testing.T) {
	for _, c := range []struct {
		t, id, payload, want string
	}{
		{"connection_ack", "", "", `{"type":"connection_ack"}`},
		{"complete", "1", "", `{"id":"1","type":"complete"}`},
		{"error", `a"<`, `[{"message":"x"}]`, `{"payload":[{"message":"x"}],"id":"a\"\u003c","type":"error"}`},
	} {
		var qid []byte
		if c.id != "" {
			qid = quote(c.id)
		}
		if got := string(appendMessage(nil, c.t, qid, []byte(c.payload))); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
}

// httpHandler serves the transport without an executor: these tests never
// get past connection setup.
type httpHandler struct{ t Transport }

func (h httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.t.Do(w, r, nil) }
