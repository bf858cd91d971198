package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// reply is one scripted HTTP response.
type reply struct {
	Status  int
	Headers map[string]string
	Body    any // JSON-encoded unless a string
}

// recorded is one request a test server received.
type recorded struct {
	At             time.Time
	Method, Path   string
	Header         http.Header
	Body           []byte
	IdempotencyKey string
}

// scriptServer is a local API whose answers a test scripts per path: each
// request takes the next reply of its path's script; once the script is
// used up the last reply repeats. With no script a path answers 200 {"ok":true}.
type scriptServer struct {
	*httptest.Server
	mu       sync.Mutex
	scripts  map[string][]reply
	requests []recorded
}

func newScriptServer(t *testing.T) *scriptServer {
	s := &scriptServer{scripts: map[string][]reply{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// script sets the replies of a path (replacing any earlier script).
func (s *scriptServer) script(path string, replies ...reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[path] = replies
}

func (s *scriptServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.requests = append(s.requests, recorded{At: time.Now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body, IdempotencyKey: r.Header.Get("Idempotency-Key")})
	rep := reply{Status: 200, Body: map[string]any{"ok": true, "path": r.URL.Path}}
	if list := s.scripts[r.URL.Path]; len(list) > 0 {
		rep = list[0]
		if len(list) > 1 {
			s.scripts[r.URL.Path] = list[1:]
		}
	}
	s.mu.Unlock()
	for k, v := range rep.Headers {
		w.Header().Set(k, v)
	}
	var b []byte
	switch v := rep.Body.(type) {
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", "application/json")
		}
	}
	w.WriteHeader(rep.Status)
	_, _ = w.Write(b)
}

// calls returns the requests received on paths starting with prefix.
func (s *scriptServer) calls(prefix string) []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []recorded
	for _, r := range s.requests {
		if strings.HasPrefix(r.Path, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// fakeOpenAI is a local OpenAI-compatible chat completions API that answers
// with a fixed text and reports usage.
type fakeOpenAI struct {
	*httptest.Server
	mu    sync.Mutex
	calls []map[string]any
	// Reply is the completion text; Usage is reported per call.
	Reply                      string
	PromptTokens, OutputTokens int
}

func newFakeOpenAI(t *testing.T, reply string) *fakeOpenAI {
	f := &fakeOpenAI{Reply: reply, PromptTokens: 120, OutputTokens: 30}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") == "" {
			http.Error(w, `{"error":{"message":"not found"}}`, http.StatusNotFound)
			return
		}
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.calls = append(f.calls, req)
		text, pt, ct := f.Reply, f.PromptTokens, f.OutputTokens
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"id": "chatcmpl-test", "object": "chat.completion", "model": req["model"],
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": text}}},
			"usage":   map[string]any{"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
		})
	}))
	t.Cleanup(f.Close)
	return f
}

// Calls returns the request bodies received.
func (f *fakeOpenAI) Calls() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]map[string]any(nil), f.calls...)
}
