package steps_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/idempotency"
	"github.com/sluicehq/sluice/internal/steps"
)

func TestHTTPGetWithBearer(t *testing.T) {
	var gotAuth, gotPath, gotKey string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotPath, gotKey = r.Header.Get("Authorization"), r.URL.RequestURI(), r.Header.Get("Idempotency-Key")
		w.Header().Set("X-Request-Id", "abc")
		writeJSON(w, 200, map[string]any{"subject": "Printer on fire", "n": 3})
	})
	res, err := newExecutor().HTTP(context.Background(), steps.Request{
		RunID: "run_1", StepID: "fetch",
		Step: step(t, `{"id":"fetch","type":"http","request":{"method":"GET",
			"url":"`+srv.URL+`/tickets/{{ input.ticketId }}","query":{"expand":"{{ input.expand }}"}}}`),
		Env:        definition.Env{Input: map[string]any{"ticketId": "T-1", "expand": "notes"}},
		Credential: &steps.Credential{Type: "bearer", Secret: map[string]any{"token": "tok-123456"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotAuth != "Bearer tok-123456" {
		t.Errorf("Authorization = %q", gotAuth)
	}
	if gotPath != "/tickets/T-1?expand=notes" {
		t.Errorf("path = %q", gotPath)
	}
	if gotKey != "" {
		t.Errorf("GET sent Idempotency-Key %q", gotKey)
	}
	if res.Output["status"] != 200 {
		t.Errorf("status = %v", res.Output["status"])
	}
	if h := res.Output["headers"].(map[string]string); h["x-request-id"] != "abc" || h["content-type"] != "application/json" {
		t.Errorf("headers = %v", h)
	}
	body := res.Output["body"].(map[string]any)
	if body["subject"] != "Printer on fire" || body["n"] != int64(3) {
		t.Errorf("body = %#v", body)
	}
	if len(res.Calls) != 1 {
		t.Fatalf("calls = %d", len(res.Calls))
	}
	c := res.Calls[0]
	if c.Kind != "http" || c.Method != "GET" || c.Path != "/tickets/T-1" || c.StatusCode != 200 || c.StartedAt.IsZero() {
		t.Errorf("call = %+v", c)
	}
	if !strings.Contains(c.ResponseBody, "Printer on fire") {
		t.Errorf("response body not recorded: %q", c.ResponseBody)
	}
	// The output must survive the expression environment.
	v, err := definition.Eval("$.output", `steps.fetch.output.body.subject + " " + string(steps.fetch.output.status)`,
		definition.Env{Steps: map[string]any{"fetch": map[string]any{"output": res.Output}}})
	if err != nil || v != "Printer on fire 200" {
		t.Errorf("eval over output = %v, %v", v, err)
	}
}

func TestHTTPPostJSONBodyFromEnv(t *testing.T) {
	var got map[string]any
	var gotType string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		gotType = r.Header.Get("Content-Type")
		json.NewDecoder(r.Body).Decode(&got)
		w.WriteHeader(http.StatusCreated)
	})
	res, err := newExecutor().HTTP(context.Background(), steps.Request{
		RunID: "run_1", StepID: "post",
		Step: step(t, `{"id":"post","type":"http","request":{"method":"POST","url":"`+srv.URL+`/notes",
			"headers":{"X-Ticket":"{{ input.ticketId }}"},
			"body":{"text":"Label: {{ steps.shape.output.label }}","ticket":"{{ input.ticketId }}","count":"{{ input.n }}","tags":["a","{{ input.ticketId }}"],"fixed":1.5}}}`),
		Env: definition.Env{
			Input: map[string]any{"ticketId": "T-9", "n": int64(4)},
			Steps: map[string]any{"shape": map[string]any{"output": map[string]any{"label": "urgent"}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if gotType != "application/json" {
		t.Errorf("Content-Type = %q", gotType)
	}
	want := map[string]any{"text": "Label: urgent", "ticket": "T-9", "count": float64(4), "tags": []any{"a", "T-9"}, "fixed": 1.5}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("body = %v, want %v", got, want)
	}
	if res.Output["status"] != 201 || res.Output["body"] != "" {
		t.Errorf("output = %v", res.Output)
	}
	if !strings.Contains(res.Calls[0].RequestBody, `"Label: urgent"`) {
		t.Errorf("request body not recorded: %q", res.Calls[0].RequestBody)
	}
}

func TestHTTPIdempotencyKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
	})
	x := newExecutor()
	run := func(req steps.Request) string {
		t.Helper()
		mu.Lock()
		keys = nil
		mu.Unlock()
		if _, err := x.HTTP(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		return keys[0]
	}
	post := step(t, `{"id":"post","type":"http","request":{"method":"POST","url":"`+srv.URL+`","body":{"a":1}}}`)

	k1 := run(steps.Request{RunID: "run_1", StepID: "post", Attempt: 1, Step: post})
	k2 := run(steps.Request{RunID: "run_1", StepID: "post", Attempt: 2, Step: post})
	if k1 == "" || k1 != k2 {
		t.Errorf("derived keys %q, %q: want equal and non-empty across attempts", k1, k2)
	}
	if want := idempotency.Key("run_1", "post"); k1 != want {
		t.Errorf("derived key %q, want the engine's key for (run, step) %q", k1, want)
	}
	if k3 := run(steps.Request{RunID: "run_2", StepID: "post", Step: post}); k3 == k1 {
		t.Errorf("another run got the same key %q", k3)
	}
	if k := run(steps.Request{RunID: "run_1", StepID: "post", Step: post, IdempotencyKey: "engine-key"}); k != "engine-key" {
		t.Errorf("explicit key = %q", k)
	}
	get := step(t, `{"id":"get","type":"http","sideEffect":true,"request":{"method":"GET","url":"`+srv.URL+`"}}`)
	if k := run(steps.Request{RunID: "run_1", StepID: "get", Step: get, IdempotencyKey: "k"}); k != "k" {
		t.Errorf("side-effecting GET key = %q", k)
	}
	get.SideEffect = false
	if k := run(steps.Request{RunID: "run_1", StepID: "get", Step: get, IdempotencyKey: "k"}); k != "" {
		t.Errorf("plain GET key = %q", k)
	}
}

func TestHTTPStatusClasses(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		class      steps.Class
		wantRetry  time.Duration
		minRetry   time.Duration
		message    string
	}{
		{name: "503", status: 503, class: steps.Transient, message: `status 503: {"error":"bad ticket id"}`},
		{name: "500", status: 500, class: steps.Transient},
		{name: "507", status: 507, class: steps.Transient},
		{name: "408", status: 408, class: steps.Transient},
		{name: "425", status: 425, class: steps.Transient},
		{name: "429 seconds", status: 429, retryAfter: "2", class: steps.Transient, wantRetry: 2 * time.Second},
		{name: "429 date", status: 429, retryAfter: future, class: steps.Transient, minRetry: 80 * time.Second},
		{name: "503 garbage retry-after", status: 503, retryAfter: "soon", class: steps.Transient},
		{name: "503 seconds beyond int64", status: 503, retryAfter: "99999999999999999999", class: steps.Transient, wantRetry: 24 * time.Hour},
		{name: "400", status: 400, class: steps.Permanent, message: `status 400: {"error":"bad ticket id"}`},
		{name: "404", status: 404, class: steps.Permanent},
		{name: "401", status: 401, class: steps.Permanent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := server(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				writeJSON(w, tc.status, map[string]any{"error": "bad ticket id"})
			})
			res, err := newExecutor().HTTP(context.Background(), steps.Request{
				Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+srv.URL+`"}}`),
			})
			e := stepError(t, err)
			if e.Class != tc.class || e.StatusCode != tc.status {
				t.Errorf("error = %+v, want class %s status %d", e, tc.class, tc.status)
			}
			if tc.minRetry == 0 && e.RetryAfter != tc.wantRetry {
				t.Errorf("RetryAfter = %s, want %s", e.RetryAfter, tc.wantRetry)
			}
			if tc.minRetry > 0 && (e.RetryAfter < tc.minRetry || e.RetryAfter > 90*time.Second) {
				t.Errorf("RetryAfter = %s, want about 90s", e.RetryAfter)
			}
			if tc.message != "" && e.Message != tc.message {
				t.Errorf("message = %q, want %q", e.Message, tc.message)
			}
			if res == nil || len(res.Calls) != 1 || res.Calls[0].StatusCode != tc.status || res.Calls[0].Error == "" {
				t.Errorf("failed call not recorded: %+v", res)
			}
			if res != nil && res.Output != nil {
				t.Errorf("output on failure: %v", res.Output)
			}
		})
	}
}

func TestHTTPRedirectNotFollowed(t *testing.T) {
	var followed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/start", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere?token=hunter22", http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(http.ResponseWriter, *http.Request) { followed.Store(true) })
	srv := server(t, mux.ServeHTTP)

	_, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+srv.URL+`/start"}}`),
	})
	e := stepError(t, err)
	if e.Class != steps.Permanent || e.StatusCode != 302 || !strings.Contains(e.Message, "redirects are not followed") {
		t.Errorf("error = %+v", e)
	}
	if strings.Contains(e.Message, "hunter22") {
		t.Errorf("query secret of Location in message: %q", e.Message)
	}
	if followed.Load() {
		t.Error("redirect was followed")
	}
}

func TestHTTPExpect(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/created":
			writeJSON(w, 201, map[string]any{"subject": "x"})
		case "/missing":
			writeJSON(w, 404, map[string]any{"error": "gone"})
		case "/noSubject":
			writeJSON(w, 200, map[string]any{"items": []any{map[string]any{"id": "one"}}})
		case "/badjson":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"subject": `)
		case "/text":
			io.WriteString(w, "plain words")
		}
	})
	run := func(path, expect string) (*steps.Result, error) {
		t.Helper()
		return newExecutor().HTTP(context.Background(), steps.Request{
			Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+srv.URL+path+`"},"expect":`+expect+`}`),
		})
	}

	_, err := run("/created", `{"status":[200]}`)
	if e := stepError(t, err); e.Class != steps.SchemaDrift || e.Message != "status 201 not in expected [200]" {
		t.Errorf("unexpected 2xx: %+v", e)
	}

	res, err := run("/missing", `{"status":[200,404]}`)
	if err != nil || res.Output["status"] != 404 {
		t.Errorf("listed 404: %v, %v", res, err)
	}

	schema := `{"type":"object","required":["subject"],"properties":{"items":{"type":"array","items":{"type":"object","properties":{"id":{"type":"integer"}}}}}}`
	_, err = run("/noSubject", `{"schema":`+schema+`}`)
	e := stepError(t, err)
	if e.Class != steps.SchemaDrift || !strings.Contains(e.Message, "$.subject") || !strings.Contains(e.Message, "$.items[0].id") {
		t.Errorf("schema violation: %+v", e)
	}

	_, err = run("/badjson", `{"schema":{"type":"object"}}`)
	if e := stepError(t, err); e.Class != steps.SchemaDrift || !strings.Contains(e.Message, "not valid JSON") {
		t.Errorf("invalid JSON with schema: %+v", e)
	}
	res, err = run("/badjson", `{"status":[200]}`)
	if err != nil || res.Output["body"] != `{"subject": ` {
		t.Errorf("invalid JSON without schema: %v, %v", res, err)
	}
	res, err = run("/text", `{"status":[200]}`)
	if err != nil || res.Output["body"] != "plain words" {
		t.Errorf("text body: %v, %v", res, err)
	}
}

func TestHTTPTimeoutAndCancel(t *testing.T) {
	release := make(chan struct{})
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	slow := step(t, `{"id":"s","type":"http","timeout":"100ms","request":{"method":"GET","url":"`+srv.URL+`"}}`)

	start := time.Now()
	res, err := newExecutor().HTTP(context.Background(), steps.Request{Step: slow})
	e := stepError(t, err)
	if e.Class != steps.Transient || !strings.Contains(e.Message, "timed out after 100ms") {
		t.Errorf("timeout: %+v", e)
	}
	if time.Since(start) > 10*time.Second { // the server never answers: only the timeout ends it
		t.Errorf("took %s", time.Since(start))
	}
	if res == nil || res.Calls[0].Error == "" {
		t.Errorf("timed out call not recorded: %+v", res)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	slow.Timeout = definition.Duration{Duration: 5 * time.Second}
	_, err = newExecutor().HTTP(ctx, steps.Request{Step: slow})
	if e := stepError(t, err); e.Class != steps.Cancelled {
		t.Errorf("cancel: %+v", e)
	}
}

func TestHTTPResponseTooLarge(t *testing.T) {
	srv := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", 1<<20+10)))
	})
	res, err := newExecutor().HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+srv.URL+`"}}`),
	})
	if e := stepError(t, err); e.Class != steps.Permanent || !strings.Contains(e.Message, "response too large") {
		t.Errorf("error = %+v", e)
	}
	if rb := res.Calls[0].ResponseBody; len(rb) > 8<<10+len("…[truncated]") || !strings.HasSuffix(rb, "…[truncated]") {
		t.Errorf("recorded body not capped: %d bytes", len(rb))
	}
}

func TestHTTPEgressDenied(t *testing.T) {
	srv := server(t, func(http.ResponseWriter, *http.Request) {})
	x := steps.NewExecutor(egress.NewClient(egress.Config{}))
	_, err := x.HTTP(context.Background(), steps.Request{
		Step: step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"`+srv.URL+`"}}`),
	})
	if e := stepError(t, err); e.Class != steps.Permanent || !strings.Contains(e.Message, "not allowed") {
		t.Errorf("error = %+v", e)
	}
}

func TestHTTPBadInput(t *testing.T) {
	x := newExecutor()
	for name, js := range map[string]string{
		"missing variable": `{"id":"s","type":"http","request":{"method":"GET","url":"http://127.0.0.1/{{ input.nope.deeper }}"}}`,
		"relative url":     `{"id":"s","type":"http","request":{"method":"GET","url":"/just/a/path"}}`,
		"file url":         `{"id":"s","type":"http","request":{"method":"GET","url":"file:///etc/passwd"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			res, err := x.HTTP(context.Background(), steps.Request{Step: step(t, js), Env: definition.Env{Input: map[string]any{}}})
			if e := stepError(t, err); e.Class != steps.Permanent {
				t.Errorf("error = %+v", e)
			}
			if res != nil {
				t.Errorf("a call was made: %+v", res)
			}
		})
	}
	_, err := x.HTTP(context.Background(), steps.Request{
		Step:       step(t, `{"id":"s","type":"http","request":{"method":"GET","url":"http://127.0.0.1/"}}`),
		Credential: &steps.Credential{Type: "bearer", Secret: map[string]any{}},
	})
	if e := stepError(t, err); e.Class != steps.Permanent || !strings.Contains(e.Message, `missing "token"`) {
		t.Errorf("incomplete credential: %+v", e)
	}
}

// TestSecretsNeverRecorded uses a server that echoes every credential it
// receives, in headers, body and error responses.
func TestSecretsNeverRecorded(t *testing.T) {
	const canary = "canary-3f9a1c7e-secret"
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo-Auth", r.Header.Get("Authorization"))
		w.Header().Set("X-Echo-Key", r.Header.Get("X-Api-Key"))
		status := 200
		if r.URL.Path == "/fail" {
			status = 400
		}
		raw, _ := io.ReadAll(r.Body)
		writeJSON(w, status, map[string]any{
			"auth": r.Header.Get("Authorization"), "key": r.Header.Get("X-Api-Key"),
			"url": r.URL.String(), "sent": string(raw),
		})
	}
	srv := server(t, echo)
	creds := map[string]*steps.Credential{
		"bearer": {Type: "bearer", Secret: map[string]any{"token": canary}},
		"basic":  {Type: "basic", Secret: map[string]any{"username": "svc-user", "password": canary}},
		"header": {Type: "header", Secret: map[string]any{"name": "X-Api-Key", "value": canary}},
	}
	forbidden := []string{canary, base64.StdEncoding.EncodeToString([]byte("svc-user:" + canary))}
	for name, cred := range creds {
		for _, path := range []string{"/ok", "/fail"} {
			t.Run(name+path, func(t *testing.T) {
				res, err := newExecutor().HTTP(context.Background(), steps.Request{
					Step: step(t, `{"id":"s","type":"http","request":{"method":"POST","url":"`+srv.URL+path+`?q=1",
						"body":{"echo":"{{ input.x }}"}}}`),
					Env:        definition.Env{Input: map[string]any{"x": "harmless"}},
					Credential: cred,
				})
				record, _ := json.Marshal(res)
				text := string(record)
				if err != nil {
					text += err.Error()
				}
				for _, f := range forbidden {
					if strings.Contains(text, f) {
						t.Fatalf("secret %q leaked: %s", f, text)
					}
				}
				if !strings.Contains(text, "[REDACTED]") {
					t.Errorf("echo not recorded as redacted: %s", text)
				}
			})
		}
	}
}
