package server

// runEvents values are rendered once per (event, selection, access) in an
// API process and the same bytes go to every subscriber of it
// (graph.FrameCache); sluice_live_renders_total says which frames were
// rendered and which reused.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	coderws "github.com/coder/websocket"
)

// liveSubscriber is one graphql-transport-ws connection with one runEvents
// subscription ("1").
type liveSubscriber struct {
	t    *testing.T
	conn *coderws.Conn
}

// subscribe connects with credential tok (a JWT or an API key) and
// subscribes to the run's events with query.
func (l *live) subscribe(t *testing.T, ctx context.Context, tok, query string) *liveSubscriber {
	t.Helper()
	s := &liveSubscriber{t: t, conn: l.dial(t, ctx)}
	send(t, ctx, s.conn, `{"type":"connection_init","payload":{"Authorization":"Bearer `+tok+`"}}`)
	if typ, p := s.next(ctx); typ != "connection_ack" {
		t.Fatalf("connection_init: %s %s", typ, p)
	}
	sub, _ := json.Marshal(map[string]any{"id": "1", "type": "subscribe",
		"payload": map[string]any{"query": query, "variables": map[string]any{"id": l.runID}}})
	send(t, ctx, s.conn, string(sub))
	return s
}

// next returns the next message's type and payload, skipping pings.
func (s *liveSubscriber) next(ctx context.Context) (string, string) {
	s.t.Helper()
	for {
		_, b, err := s.conn.Read(ctx)
		if err != nil {
			s.t.Fatalf("read: %v", err)
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			s.t.Fatalf("message %s: %v", b, err)
		}
		if m.Type != "ping" && m.Type != "pong" {
			return m.Type, string(m.Payload)
		}
	}
}

// frame returns the next "next" payload; anything else fails.
func (s *liveSubscriber) frame(ctx context.Context) string {
	s.t.Helper()
	typ, p := s.next(ctx)
	if typ != "next" || strings.Contains(p, `"errors"`) {
		s.t.Fatalf("got %s %s, want a runEvents value", typ, p)
	}
	return p
}

// rest returns the "next" payloads until the subscription completes.
func (s *liveSubscriber) rest(ctx context.Context) []string {
	s.t.Helper()
	var out []string
	for {
		typ, p := s.next(ctx)
		switch {
		case typ == "complete":
			return out
		case typ != "next" || strings.Contains(p, `"errors"`):
			s.t.Fatalf("got %s %s after %d values", typ, p, len(out))
		}
		out = append(out, p)
	}
}

// renders reads sluice_live_renders_total from the process's /metrics.
func (l *live) renders(t *testing.T) (hit, miss float64) {
	t.Helper()
	rec := httptest.NewRecorder()
	l.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	found := 0
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		for label, to := range map[string]*float64{"hit": &hit, "miss": &miss} {
			if v, ok := strings.CutPrefix(sc.Text(), `sluice_live_renders_total{result="`+label+`"} `); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				*to = f
				found++
			}
		}
	}
	if found != 2 {
		t.Fatalf("/metrics has %d of the 2 sluice_live_renders_total series", found)
	}
	return hit, miss
}

// gql runs a query or mutation and returns its data; errors fail.
func (l *live) gql(t *testing.T, tok, query string, vars map[string]any) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	req, _ := http.NewRequest(http.MethodPost, l.url+"/graphql", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data   map[string]any    `json:"data"`
		Errors []json.RawMessage `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.Errors) > 0 {
		t.Fatalf("%s: %v %s", query, err, out.Errors)
	}
	return out.Data
}

// runEventValue decodes a runEvents payload into its fields.
func runEventValue(t *testing.T, payload string) map[string]any {
	t.Helper()
	var p struct {
		Data struct {
			RunEvents map[string]any `json:"runEvents"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(payload), &p); err != nil || p.Data.RunEvents == nil {
		t.Fatalf("payload %s: %v", payload, err)
	}
	return p.Data.RunEvents
}

func keysOf(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, ",")
}

// TestRunEventsRenderedOncePerSelection: many subscribers of one run with
// the same selection get byte-identical, correct frames (the stored event
// from the log, then the live one from cancelRun), a second selection on
// the same run gets its own shape, and the process rendered each event
// once per selection, not once per frame.
func TestRunEventsRenderedOncePerSelection(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	const (
		queryA = `subscription($id: ID!) { runEvents(runID: $id) { id seq type at } }`
		queryB = `subscription($id: ID!) { runEvents(runID: $id) { seq stepID } }`
		nA, nB = 12, 4
	)
	type stream struct {
		sub    *liveSubscriber
		query  string
		frames []string
	}
	var streams []*stream
	for i := range nA + nB {
		q := queryA
		if i >= nA {
			q = queryB
		}
		// Different people with the same roles share frames: a value of
		// these selections depends on the event and the access, not on who.
		tok := l.token(t, fmt.Sprintf("user_%d", i), "viewer")
		streams = append(streams, &stream{sub: l.subscribe(t, ctx, tok, q), query: q})
	}
	// Every subscriber has the stored event before the live one exists.
	for _, s := range streams {
		s.frames = append(s.frames, s.sub.frame(ctx))
	}
	l.gql(t, l.token(t, "user_owner", "owner"), `mutation($id: ID!) { cancelRun(id: $id) { id } }`, map[string]any{"id": l.runID})
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() { s.frames = append(s.frames, s.sub.rest(ctx)...) })
	}
	wg.Wait()

	want := map[string]struct {
		keys  string
		first []string
	}{queryA: {"at,id,seq,type", nil}, queryB: {"seq,stepID", nil}}
	frames := 0
	for _, s := range streams {
		frames += len(s.frames)
		w := want[s.query]
		if w.first == nil {
			w.first = s.frames
			want[s.query] = w
			var types []string
			for i, p := range s.frames {
				v := runEventValue(t, p)
				if got := keysOf(v); got != w.keys {
					t.Errorf("%s: frame %d has fields %s, want %s", s.query, i, got, w.keys)
				}
				if v["seq"] != float64(i+1) {
					t.Errorf("%s: frame %d has seq %v, want %d", s.query, i, v["seq"], i+1)
				}
				if tp, ok := v["type"].(string); ok {
					types = append(types, tp)
				}
			}
			if s.query == queryA && strings.Join(types, ",") != "run.queued,run.cancelled" {
				t.Errorf("frames of %s: %v, want run.queued then run.cancelled", s.query, types)
			}
			continue
		}
		if !slices.Equal(s.frames, w.first) {
			t.Errorf("subscribers of one selection got different bytes:\n%q\n%q", s.frames, w.first)
		}
	}
	if len(want[queryA].first) != 2 || len(want[queryB].first) != 2 {
		t.Fatalf("want 2 frames per subscriber, got %d and %d", len(want[queryA].first), len(want[queryB].first))
	}
	hit, miss := l.renders(t)
	if hit+miss != float64(frames) {
		t.Errorf("renders counted %v hits + %v misses for %d frames", hit, miss, frames)
	}
	// 2 events x 2 selections; a subscriber slower than the cache's TTL
	// would render again, so only "fewer than frames" is certain.
	if miss >= float64(frames) || hit == 0 {
		t.Errorf("%v renders (%v reused) for %d frames: every frame was rendered", miss, hit, frames)
	}
	t.Logf("%d frames, %v rendered, %v reused", frames, miss, hit)
}

// TestRunEventsFramesKeepAccessApart: the same query on the same run is
// rendered separately for a viewer and for a viewer API key scoped to the
// run's environment, and for an owner (the cache key holds the access:
// tenant, environment scope, roles); each is reused for another credential
// of the same access. A key scoped to another environment still gets
// NOT_FOUND, never the cached bytes.
func TestRunEventsFramesKeepAccessApart(t *testing.T) {
	l := newLive(t)
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	owner := l.token(t, "user_owner", "owner")
	var otherEnv string
	for _, e := range l.gql(t, owner, `{ environments { edges { node { id } } } }`, nil)["environments"].(map[string]any)["edges"].([]any) {
		if id := e.(map[string]any)["node"].(map[string]any)["id"].(string); id != l.envID {
			otherEnv = id
		}
	}
	if otherEnv == "" {
		t.Fatal("the tenant has a single environment")
	}
	key := func(env string) string {
		d := l.gql(t, owner, `mutation($e: ID) { createAPIKey(input: {name: "live", roles: [VIEWER], environmentID: $e}) { token } }`, map[string]any{"e": env})
		return d["createAPIKey"].(map[string]any)["token"].(string)
	}
	const query = `subscription($id: ID!) { runEvents(runID: $id) { id seq type at } }`
	step := func(name, tok string, wantHit, wantMiss float64) string {
		t.Helper()
		p := l.subscribe(t, ctx, tok, query).frame(ctx)
		if v := runEventValue(t, p); v["seq"] != float64(1) || v["type"] != "run.queued" {
			t.Fatalf("%s: first frame %s, want seq 1 run.queued", name, p)
		}
		if hit, miss := l.renders(t); hit != wantHit || miss != wantMiss {
			t.Fatalf("after %s: %v hits, %v misses; want %v, %v", name, hit, miss, wantHit, wantMiss)
		}
		return p
	}
	// Same roles (viewer) throughout: only the environment scope differs.
	step("a viewer", l.token(t, "user_a", "viewer"), 0, 1)
	step("a viewer key scoped to the run's environment", key(l.envID), 0, 2)
	step("another viewer", l.token(t, "user_b", "viewer"), 1, 2)
	step("another viewer key scoped to the run's environment", key(l.envID), 2, 2)
	step("the owner", owner, 2, 3)

	s := l.subscribe(t, ctx, key(otherEnv), query)
	typ, p := s.next(ctx)
	if !strings.Contains(p, "NOT_FOUND") || strings.Contains(p, `"seq"`) {
		t.Fatalf("a key scoped to another environment got %s %s, want NOT_FOUND", typ, p)
	}
	if hit, miss := l.renders(t); hit != 2 || miss != 3 {
		t.Fatalf("the refused subscription changed the renders: %v hits, %v misses", hit, miss)
	}
}
