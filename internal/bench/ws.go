package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// wsMsg is one graphql-transport-ws message.
type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
	// Received is when the message was read off the socket.
	Received time.Time `json:"-"`
}

// wsConn is an authenticated graphql-transport-ws connection to one API
// process. Reads happen on one goroutine; writes are serialised.
type wsConn struct {
	conn *websocket.Conn
	mu   sync.Mutex
}

// dialWS opens a websocket on apiURL's /graphql, sends connection_init with
// the bearer token and waits for connection_ack.
func dialWS(ctx context.Context, apiURL, token string) (*wsConn, error) {
	u := "ws" + strings.TrimPrefix(strings.TrimSuffix(apiURL, "/"), "http") + "/graphql"
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	conn.SetReadLimit(1 << 20)
	w := &wsConn{conn: conn}
	init, _ := json.Marshal(map[string]any{"Authorization": "Bearer " + token})
	if err := w.write(ctx, wsMsg{Type: "connection_init", Payload: init}); err != nil {
		w.close()
		return nil, err
	}
	m, err := w.read(ctx)
	if err != nil || m.Type != "connection_ack" {
		w.close()
		return nil, fmt.Errorf("connection_init: want connection_ack, got %+v (%v)", m, err)
	}
	return w, nil
}

func (w *wsConn) close() { _ = w.conn.CloseNow() }

func (w *wsConn) write(ctx context.Context, m wsMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.Write(ctx, websocket.MessageText, b)
}

// subscribe starts subscription id.
func (w *wsConn) subscribe(ctx context.Context, id, query string, vars map[string]any) error {
	p, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return err
	}
	return w.write(ctx, wsMsg{ID: id, Type: "subscribe", Payload: p})
}

// read returns the next message, answering pings on the way.
func (w *wsConn) read(ctx context.Context) (wsMsg, error) {
	for {
		_, b, err := w.conn.Read(ctx)
		if err != nil {
			return wsMsg{}, err
		}
		received := time.Now()
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return wsMsg{}, fmt.Errorf("not a graphql-transport-ws message: %.200s", b)
		}
		if m.Type == "ping" {
			if err := w.write(ctx, wsMsg{Type: "pong"}); err != nil {
				return wsMsg{}, err
			}
			continue
		}
		m.Received = received
		return m, nil
	}
}

// frame is one message of a subscription: its data (for "next"), or its end.
type frame struct {
	Type     string // next, error or complete
	Data     map[string]any
	Raw      string
	Received time.Time
}

// next returns the next message of subscription id; GraphQL errors in a
// "next" payload and "error" messages are errors.
func (w *wsConn) next(ctx context.Context, id string) (frame, error) {
	f, err := w.nextRaw(ctx, id)
	if err != nil || f.Type != "next" {
		return f, err
	}
	return f, f.decode(id)
}

// nextRaw is next without decoding the payload (Data stays nil; see
// decode): a subscriber that must keep up with many frames decodes later.
func (w *wsConn) nextRaw(ctx context.Context, id string) (frame, error) {
	for {
		m, err := w.read(ctx)
		if err != nil {
			return frame{}, err
		}
		if m.ID != id {
			continue
		}
		f := frame{Type: m.Type, Raw: string(m.Payload), Received: m.Received}
		if m.Type == "error" {
			return f, fmt.Errorf("subscription %s: %.300s", id, f.Raw)
		}
		return f, nil
	}
}

// decode fills Data from a "next" frame's payload.
func (f *frame) decode(id string) error {
	var p struct {
		Data   map[string]any    `json:"data"`
		Errors []json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal([]byte(f.Raw), &p); err != nil {
		return err
	}
	if len(p.Errors) > 0 {
		return fmt.Errorf("subscription %s: %.300s", id, f.Raw)
	}
	f.Data = p.Data
	return nil
}
