package steps_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/steps"
)

const amoStep = `{"id":"post","type":"http","sideEffect":true,"delivery":"at_most_once","timeout":"2s","request":{"method":"POST","url":"URL","body":{"a":1}}}`

func amoRequest(t *testing.T, url string, before func(context.Context) error) steps.Request {
	return steps.Request{RunID: "run_1", StepID: "post", Env: definition.Env{},
		Step:       step(t, replaceURL(amoStep, url)),
		BeforeSend: before}
}

func replaceURL(s, url string) string {
	for i := 0; i+3 <= len(s); i++ {
		if s[i:i+3] == "URL" {
			return s[:i] + url + s[i+3:]
		}
	}
	return s
}

// TestBeforeSendRecordsFirst: the hook runs before the receiver sees
// anything, and a failing hook sends nothing.
func TestBeforeSendRecordsFirst(t *testing.T) {
	var arrivals atomic.Int32
	var marked atomic.Bool
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		if !marked.Load() {
			t.Error("request arrived before BeforeSend ran")
		}
		arrivals.Add(1)
		writeJSON(w, 200, map[string]any{"ok": true})
	})
	_, err := newExecutor().HTTP(context.Background(), amoRequest(t, srv.URL, func(context.Context) error { marked.Store(true); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	_, err = newExecutor().HTTP(context.Background(), amoRequest(t, srv.URL, func(context.Context) error { return errors.New("db down") }))
	if e := stepError(t, err); e.Class != steps.Transient || !e.NotSent {
		t.Errorf("failing hook: %+v", e)
	}
	if n := arrivals.Load(); n != 1 {
		t.Errorf("receiver saw %d requests, want 1", n)
	}
}

// TestNotSentOnlyWithoutConnection: a refused connection certainly sent
// nothing; a timeout or a 503 after the receiver got the request may have.
func TestNotSentOnlyWithoutConnection(t *testing.T) {
	ok := func(context.Context) error { return nil }
	// Nothing listens on a port just closed.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = newExecutor().HTTP(context.Background(), amoRequest(t, "http://"+addr+"/x", ok))
	if e := stepError(t, err); e.Class != steps.Transient || !e.NotSent {
		t.Errorf("connect refused: %+v", e)
	}

	release := make(chan struct{})
	hang := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	_, err = newExecutor().HTTP(context.Background(), amoRequest(t, hang.URL, ok))
	if e := stepError(t, err); e.Class != steps.Transient || e.NotSent {
		t.Errorf("timeout after sending: %+v", e)
	}

	busy := server(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 503, map[string]any{"busy": true}) })
	_, err = newExecutor().HTTP(context.Background(), amoRequest(t, busy.URL, ok))
	if e := stepError(t, err); e.Class != steps.Transient || e.NotSent || e.StatusCode != 503 {
		t.Errorf("503: %+v", e)
	}
}
