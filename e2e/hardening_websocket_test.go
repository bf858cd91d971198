package e2e

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A connection_init whose payload is not a JSON object used to leave the
// socket open with no close frame and no timeout: every such client kept a
// descriptor of the API process until it was restarted.

// badInit dials p and sends a connection_init with a string payload.
func badInit(ctx context.Context, p *process) (*websocket.Conn, error) {
	conn, _, err := dialWS(ctx, p, nil)
	if err != nil {
		return nil, err
	}
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_init","payload":"x"}`)); err != nil {
		conn.CloseNow()
		return nil, err
	}
	return conn, nil
}

// openFDs counts the open descriptors of a process.
func openFDs(t *testing.T, p *process) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid(t)))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestWebsocketBadInitPayloadIsClosed(t *testing.T) {
	t.Parallel()
	for _, payload := range []string{`"x"`, `42`, `[1,2]`, `true`} {
		t.Run(payload, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
			defer cancel()
			conn, _, err := dialWS(ctx, server(0), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseNow()
			if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_init","payload":`+payload+`}`)); err != nil {
				t.Fatal(err)
			}
			w := &wsClient{t: t, conn: conn}
			for {
				m, err := w.read(ctx)
				if err != nil {
					if got := websocket.CloseStatus(err); got != 4400 {
						t.Fatalf("payload %s: want close code 4400, got %d (%v)", payload, got, err)
					}
					return
				}
				if m.Type == "connection_ack" {
					t.Fatalf("payload %s was acknowledged", payload)
				}
			}
		})
	}
}

// TestWebsocketBadInitLeavesNoDescriptor sends 300 bad connection_init
// messages to an API process of its own, each client disconnecting at once,
// and waits for the process's open descriptors to come back to where they
// were.
func TestWebsocketBadInitLeavesNoDescriptor(t *testing.T) {
	t.Parallel()
	st := newProcessStack(t, 0) // the API's descriptors are read from /proc
	p := st.server
	// Warm up: the first connection may open pooled resources that stay.
	// It waits for the server's answer (a close frame; at most 10s without
	// one), so the count below is taken with no connection in flight.
	ctx, cancel := context.WithTimeout(context.Background(), 2*subTimeout)
	defer cancel()
	if conn, err := badInit(ctx, p); err == nil {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		_, _, _ = conn.Read(rctx)
		rcancel()
		conn.CloseNow()
	}
	before := openFDs(t, p)

	const clients = 300
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	sem := make(chan struct{}, 20)
	for range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conn, err := badInit(ctx, p)
			if err != nil {
				errs <- err
				return
			}
			conn.CloseNow() // gone without a close frame
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}
	// Slack for descriptors the process opens on its own meanwhile (a pool
	// connection); 300 leaked sockets are far beyond it.
	const slack = 10
	var now int
	eventually(t, 90*time.Second, func() (bool, string) {
		now = openFDs(t, p)
		return now <= before+slack, fmt.Sprintf("open descriptors: %d before %d bad clients, still %d", before, clients, now)
	})
	t.Logf("open descriptors: %d before, %d after %d bad clients", before, now, clients)
	// The process still serves websockets.
	connectWS(t, p, wsBearer(token(t, newTenant(t, "ws-fd"), "viewer")))
}
