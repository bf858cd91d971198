package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// Live updates over graphql-transport-ws (and SSE), as a client sees them.

const (
	sRunEvents  = `subscription($id: ID!, $after: Int) { runEvents(runID: $id, afterSeq: $after) { id runID seq type stepID attempt data at } }`
	sRunUpdated = `subscription($where: RunWhereInput) { runUpdated(where: $where) { id status costMicroUSD costUSD workflow { slug } steps { stepID status } } }`
	// subTimeout only keeps a broken test from hanging the suite; nothing
	// asserts how fast events arrive.
	subTimeout = 60 * time.Second
)

// wsMsg is one graphql-transport-ws message.
type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsClient is a graphql-transport-ws client on one API process.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
	mu   sync.Mutex // serialises writes (pongs come from the reader)
}

func wsURL(p *process) string { return "ws" + strings.TrimPrefix(p.url, "http") + "/graphql" }

// dialWS opens the websocket without sending connection_init.
func dialWS(ctx context.Context, p *process, header http.Header) (*websocket.Conn, *http.Response, error) {
	c, resp, err := websocket.Dial(ctx, wsURL(p), &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPHeader:   header,
	})
	if err == nil {
		c.SetReadLimit(1 << 20)
	}
	return c, resp, err
}

// connectWS opens an authenticated connection (connection_init with init,
// e.g. {"Authorization": "Bearer ..."}) and waits for connection_ack.
func connectWS(t testing.TB, p *process, init map[string]any) *wsClient {
	t.Helper()
	w, err := openWS(t, p, init)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// openWS is connectWS for other goroutines than the test's.
func openWS(t testing.TB, p *process, init map[string]any) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	conn, _, err := dialWS(ctx, p, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", wsURL(p), err)
	}
	w := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if err := w.write(ctx, wsMsg{Type: "connection_init", Payload: wsJSON(init)}); err != nil {
		return nil, err
	}
	m, err := w.read(ctx)
	if err != nil || m.Type != "connection_ack" {
		return nil, fmt.Errorf("connection_init: want connection_ack, got %+v (%v)", m, err)
	}
	return w, nil
}

func wsBearer(tok string) map[string]any { return map[string]any{"Authorization": "Bearer " + tok} }

func wsJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (w *wsClient) send(m wsMsg) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	if err := w.write(ctx, m); err != nil {
		w.t.Fatalf("websocket write: %v", err)
	}
}

func (w *wsClient) write(ctx context.Context, m wsMsg) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn.Write(ctx, websocket.MessageText, wsJSON(m))
}

// read returns the next message, answering pings on the way.
func (w *wsClient) read(ctx context.Context) (wsMsg, error) {
	for {
		_, b, err := w.conn.Read(ctx)
		if err != nil {
			return wsMsg{}, err
		}
		var m wsMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return wsMsg{}, fmt.Errorf("not a graphql-transport-ws message: %s", b)
		}
		if m.Type == "ping" {
			if err := w.write(ctx, wsMsg{Type: "pong"}); err != nil {
				return wsMsg{}, err
			}
			continue
		}
		return m, nil
	}
}

func (w *wsClient) subscribe(id, query string, vars map[string]any) {
	w.t.Helper()
	w.send(subscribeMsg(id, query, vars))
}

func subscribeMsg(id, query string, vars map[string]any) wsMsg {
	return wsMsg{ID: id, Type: "subscribe", Payload: wsJSON(map[string]any{"query": query, "variables": vars})}
}

// wsFrame is one "next" payload, or the end of a subscription.
type wsFrame struct {
	Type   string // next, error or complete
	Data   map[string]any
	Errors []gqlError
	Raw    string
}

// next returns the next message of subscription id.
func (w *wsClient) next(ctx context.Context, id string) (wsFrame, error) {
	for {
		m, err := w.read(ctx)
		if err != nil {
			return wsFrame{}, err
		}
		if m.ID != id {
			continue
		}
		f := wsFrame{Type: m.Type, Raw: string(m.Payload)}
		switch m.Type {
		case "next":
			var p struct {
				Data   map[string]any `json:"data"`
				Errors []gqlError     `json:"errors"`
			}
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				return f, err
			}
			f.Data, f.Errors = p.Data, p.Errors
		case "error":
			_ = json.Unmarshal(m.Payload, &f.Errors)
		}
		return f, nil
	}
}

// subEvent is one runEvents frame as received.
type subEvent struct {
	Seq      int
	Type     string
	StepID   string
	Data     any
	At       time.Time
	Received time.Time
}

// events reads runEvents frames of subscription id until the server
// completes it, or until stop (if given) returns true; any error fails.
func (w *wsClient) events(id string, stop func([]subEvent) bool) []subEvent {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	out, err := w.collect(ctx, id, stop)
	if err != nil {
		w.t.Fatal(err)
	}
	return out
}

// collect is events for other goroutines than the test's: it returns the
// failure instead.
func (w *wsClient) collect(ctx context.Context, id string, stop func([]subEvent) bool) ([]subEvent, error) {
	var out []subEvent
	for {
		f, err := w.next(ctx, id)
		if err != nil {
			return out, fmt.Errorf("runEvents after %d events: %w", len(out), err)
		}
		switch {
		case f.Type == "complete":
			return out, nil
		case f.Type == "error" || len(f.Errors) > 0:
			return out, fmt.Errorf("runEvents failed after %d events: %s", len(out), f.Raw)
		}
		e := get(f.Data, "runEvents")
		at, err := time.Parse(time.RFC3339Nano, str(e, "at"))
		if err != nil {
			return out, fmt.Errorf("event at: %v (%s)", err, f.Raw)
		}
		out = append(out, subEvent{Seq: int(get(e, "seq").(float64)), Type: str(e, "type"), StepID: str(e, "stepID"), Data: get(e, "data"), At: at, Received: time.Now()})
		if stop != nil && stop(out) {
			return out, nil
		}
	}
}

// subCheckGapless fails unless events are seq from..from+n-1, each once.
func subCheckGapless(t testing.TB, events []subEvent, from int) {
	t.Helper()
	for i, e := range events {
		if e.Seq != from+i {
			t.Fatalf("event %d has seq %d, want %d (gap or duplicate): %v", i, e.Seq, from+i, events)
		}
	}
}

// subStoredEvents returns a run's event types by seq, as a query reads them.
func subStoredEvents(t *testing.T, c *client, runID string) []string {
	t.Helper()
	d := c.ok(`query($id: ID!) { node(id: $id) { ... on Run { events { seq type } } } }`, map[string]any{"id": runID})
	return eventTypes(get(d, "node").(map[string]any))
}

func subTypes(events []subEvent) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.Type
	}
	return out
}

// liveTenant is a tenant with a deployed workflow, for subscription tests.
type liveTenant struct {
	tenantID, envID, workflowID string
	owner                       *client
}

func newLiveTenant(t *testing.T, prefix string, def map[string]any) *liveTenant {
	t.Helper()
	lt := &liveTenant{tenantID: newTenant(t, prefix)}
	lt.owner = newClient(t, 0, token(t, lt.tenantID, "owner"))
	for _, e := range edges(lt.owner.ok(qEnvironments, nil), "environments") {
		if e["name"] == "development" {
			lt.envID = e["id"].(string)
		}
	}
	f := &fixture{owner: lt.owner, envID: lt.envID}
	lt.workflowID, _ = deployWorkflow(t, f, "live-"+randHex(3), def)
	return lt
}

func (lt *liveTenant) start(t *testing.T) string {
	t.Helper()
	return str(lt.owner.ok(mStartRun, map[string]any{"w": lt.workflowID, "e": lt.envID, "i": map[string]any{}}), "startRun.id")
}

// subChainDefinition is n transform steps, each needing the one before.
func subChainDefinition(n int) map[string]any {
	steps := []any{map[string]any{"id": "s1", "type": "transform", "output": "'a'"}}
	for i := 2; i <= n; i++ {
		steps = append(steps, map[string]any{
			"id": fmt.Sprintf("s%d", i), "type": "transform", "needs": []any{fmt.Sprintf("s%d", i-1)},
			"output": fmt.Sprintf("steps.s%d.output + 'a'", i-1),
		})
	}
	return map[string]any{"schemaVersion": 1, "steps": steps, "output": fmt.Sprintf("steps.s%d.output", n)}
}

// subPausedDefinition parks the run on a 2s delay between transforms, so a
// client can act in the middle of it.
func subPausedDefinition() map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"steps": []any{
			map[string]any{"id": "prep", "type": "transform", "output": "'ready'"},
			map[string]any{"id": "wait", "type": "delay", "needs": []any{"prep"}, "duration": "2s"},
			map[string]any{"id": "after1", "type": "transform", "needs": []any{"wait"}, "output": "'a'"},
			map[string]any{"id": "after2", "type": "transform", "needs": []any{"after1"}, "output": "steps.after1.output + 'b'"},
		},
		"output": "steps.after2.output",
	}
}

// subWaitingOn stops a stream once the run parks on the delay step.
func subWaitingOn(step string) func([]subEvent) bool {
	return func(ev []subEvent) bool {
		last := ev[len(ev)-1]
		return last.StepID == step && last.Type == "step.waiting"
	}
}

func TestSubscriptionRunEventsFromStart(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-all", subChainDefinition(5))
	runID := lt.start(t)
	w := connectWS(t, server(0), wsBearer(token(t, lt.tenantID, "viewer")))
	w.subscribe("1", sRunEvents, map[string]any{"id": runID, "after": 0})
	got := w.events("1", nil)

	subCheckGapless(t, got, 1)
	if got[0].Type != "run.queued" || got[len(got)-1].Type != "run.succeeded" {
		t.Fatalf("want run.queued ... run.succeeded, got %v", subTypes(got))
	}
	stored := subStoredEvents(t, lt.owner, runID)
	if strings.Join(subTypes(got), ",") != strings.Join(stored, ",") {
		t.Fatalf("subscription and log differ:\n sub %v\n log %v", subTypes(got), stored)
	}
	if n := strings.Count(strings.Join(stored, ","), "step.succeeded"); n != 5 {
		t.Fatalf("want 5 step.succeeded, got %d in %v", n, stored)
	}
}

func TestSubscriptionResumeAfterDisconnect(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-resume", subPausedDefinition())
	runID := lt.start(t)
	tok := token(t, lt.tenantID, "operator")

	first := connectWS(t, server(0), wsBearer(tok))
	first.subscribe("a", sRunEvents, map[string]any{"id": runID})
	before := first.events("a", subWaitingOn("wait"))
	_ = first.conn.Close(websocket.StatusNormalClosure, "going away mid-run")
	last := before[len(before)-1].Seq
	subCheckGapless(t, before, 1)

	// Reconnect to the other API process with the last seq seen.
	second := connectWS(t, server(1), wsBearer(tok))
	second.subscribe("b", sRunEvents, map[string]any{"id": runID, "after": last})
	after := second.events("b", nil)
	if len(after) == 0 {
		t.Fatal("nothing after reconnecting")
	}
	subCheckGapless(t, after, last+1)
	if after[len(after)-1].Type != "run.succeeded" {
		t.Fatalf("resumed stream ends with %s, want run.succeeded", after[len(after)-1].Type)
	}
	all := append(subTypes(before), subTypes(after)...)
	if stored := subStoredEvents(t, lt.owner, runID); strings.Join(all, ",") != strings.Join(stored, ",") {
		t.Fatalf("before+after differ from the log:\n got %v\n log %v", all, stored)
	}
}

func TestSubscriptionAcrossAPIProcesses(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-procs", subPausedDefinition())
	runID := lt.start(t)
	tok := token(t, lt.tenantID, "viewer")
	var wg sync.WaitGroup
	results := make([][]subEvent, len(suite.servers))
	errs := make([]error, len(suite.servers))
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	for i, p := range suite.servers {
		w := connectWS(t, p, wsBearer(tok))
		w.subscribe("x", sRunEvents, map[string]any{"id": runID, "after": 0})
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = w.collect(ctx, "x", nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("API process %d: %v", i, err)
		}
	}
	stored := strings.Join(subStoredEvents(t, lt.owner, runID), ",")
	for i, got := range results {
		subCheckGapless(t, got, 1)
		if strings.Join(subTypes(got), ",") != stored {
			t.Fatalf("API process %d delivered %v, log has %s", i, subTypes(got), stored)
		}
		// Events after the delay were committed by a worker while this
		// subscriber waited: only the Redis fan-out could deliver them.
		if got[len(got)-1].Type != "run.succeeded" {
			t.Fatalf("API process %d: last event %s", i, got[len(got)-1].Type)
		}
	}
}

// wsCloseCode dials, sends connection_init with init and returns the close
// status the server ends the connection with.
func wsCloseCode(t *testing.T, init map[string]any) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	conn, _, err := dialWS(ctx, server(0), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	w := &wsClient{t: t, conn: conn}
	w.send(wsMsg{Type: "connection_init", Payload: wsJSON(init)})
	for {
		m, err := w.read(ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
		if m.Type == "connection_ack" {
			t.Fatalf("connection_init %v was accepted", init)
		}
	}
}

func TestSubscriptionRefusals(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-refuse", subChainDefinition(1))
	other := newTenant(t, "sub-other")
	runID := lt.start(t)
	expired := authValidClaims(lt.tenantID)
	expired.IssuedAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Hour))
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))

	for _, c := range []struct {
		name string
		init map[string]any
		want websocket.StatusCode
	}{
		{"missing token", map[string]any{}, 4401},
		{"no payload", nil, 4401},
		{"bad token", wsBearer("not-a-jwt"), 4401},
		{"bad bare token", map[string]any{"token": "not-a-jwt"}, 4401},
		{"not bearer", map[string]any{"Authorization": "Basic " + token(t, lt.tenantID, "owner")}, 4401},
		{"expired token", wsBearer(authSign(t, jwt.SigningMethodHS256, []byte(jwtSecret), expired, "")), 4401},
		{"no role in tenant", wsBearer(authSign(t, jwt.SigningMethodHS256, []byte(jwtSecret), func() authClaims {
			c := authValidClaims(lt.tenantID)
			c.Roles = nil
			return c
		}(), "")), 4403},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := wsCloseCode(t, c.init); got != c.want {
				t.Fatalf("close code %d, want %d", got, c.want)
			}
		})
	}

	t.Run("bare token and lower-case key accepted", func(t *testing.T) {
		connectWS(t, server(1), map[string]any{"token": token(t, lt.tenantID, "viewer")})
		connectWS(t, server(1), map[string]any{"authorization": "Bearer " + token(t, lt.tenantID, "viewer")})
	})

	t.Run("another tenant's run reads as unknown", func(t *testing.T) {
		w := connectWS(t, server(1), wsBearer(token(t, other, "owner")))
		ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
		defer cancel()
		var codes, messages []string
		for i, id := range []string{runID, "run_" + strings.Repeat("0", len(runID)-4)} {
			sid := fmt.Sprint("q", i)
			w.subscribe(sid, sRunEvents, map[string]any{"id": id, "after": 0})
			f, err := w.next(ctx, sid)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Errors) == 0 || f.Data["runEvents"] != nil {
				t.Fatalf("subscribing to %s: want an error and no event, got %s", id, f.Raw)
			}
			c, _ := f.Errors[0].Extensions["code"].(string)
			codes = append(codes, c)
			messages = append(messages, strings.ReplaceAll(f.Errors[0].Message, id, "ID"))
		}
		if codes[0] != "NOT_FOUND" || codes[1] != "NOT_FOUND" || messages[0] != messages[1] {
			t.Fatalf("foreign run %v %v differs from unknown run", codes, messages)
		}
	})

	t.Run("negative afterSeq", func(t *testing.T) {
		w := connectWS(t, server(0), wsBearer(token(t, lt.tenantID, "viewer")))
		ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
		defer cancel()
		w.subscribe("n", sRunEvents, map[string]any{"id": runID, "after": -1})
		f, err := w.next(ctx, "n")
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Errors) == 0 || f.Errors[0].Extensions["code"] != "VALIDATION" {
			t.Fatalf("afterSeq -1: want VALIDATION, got %s", f.Raw)
		}
	})

	t.Run("foreign browser origin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
		defer cancel()
		conn, resp, err := dialWS(ctx, server(0), http.Header{"Origin": []string{"https://evil.example"}})
		if err == nil {
			conn.CloseNow()
			t.Fatal("a foreign Origin was upgraded")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign Origin: want 403, got %v (%v)", resp, err)
		}
	})

	t.Run("SSE without token", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{"query": sRunEvents, "variables": map[string]any{"id": runID}})
		req, _ := http.NewRequest(http.MethodPost, server(0).url+"/graphql", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "text/event-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("SSE without a token: want 401, got %d", resp.StatusCode)
		}
	})
}

func TestSubscriptionEndsWhenTokenExpires(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-exp", subChainDefinition(1))
	c := authValidClaims(lt.tenantID)
	exp := time.Now().Add(3 * time.Second)
	c.ExpiresAt = jwt.NewNumericDate(exp)
	w := connectWS(t, server(0), wsBearer(authSign(t, jwt.SigningMethodHS256, []byte(jwtSecret), c, "")))
	w.subscribe("u", sRunUpdated, nil)
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	for {
		_, err := w.read(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			t.Fatal("the connection outlived its token")
		}
		if time.Now().Before(exp.Truncate(time.Second)) {
			t.Fatalf("closed before the token expired: %v", err)
		}
		return
	}
}

func TestSubscriptionRunUpdatedStaysInTenant(t *testing.T) {
	t.Parallel()
	// A's runs park on a 2s delay, so a status before the last one lasts
	// long enough to be read whatever the machine's load (runUpdated sends
	// the run as it is when the notice is handled).
	a := newLiveTenant(t, "sub-upd-a", subPausedDefinition())
	b := newLiveTenant(t, "sub-upd-b", subChainDefinition(2))
	w := connectWS(t, server(1), wsBearer(token(t, a.tenantID, "viewer")))
	w.subscribe("all", sRunUpdated, nil)
	w.subscribe("done", sRunUpdated, map[string]any{"where": map[string]any{"status": "succeeded"}})

	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	statuses := map[string][]string{}
	succeeded := map[string]bool{}
	lastIs := func(id, status string) bool {
		l := statuses[id]
		return len(l) > 0 && l[len(l)-1] == status
	}
	ours := map[string]bool{}
	bRun := ""
	readUntil := func(done func() bool) {
		for !done() {
			m, err := w.read(ctx)
			if err != nil {
				t.Fatalf("runUpdated: %v (so far %v)", err, statuses)
			}
			if m.Type != "next" {
				t.Fatalf("unexpected %s: %s", m.Type, m.Payload)
			}
			var p struct {
				Data   map[string]any `json:"data"`
				Errors []gqlError     `json:"errors"`
			}
			if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 {
				t.Fatalf("runUpdated frame: %s", m.Payload)
			}
			r := get(p.Data, "runUpdated")
			id, st := str(r, "id"), str(r, "status")
			if !ours[id] {
				t.Fatalf("tenant A received run %s (B's run is %s)", id, bRun)
			}
			if str(r, "workflow.slug") == "" || len(get(r, "steps").([]any)) != 4 {
				t.Fatalf("nested fields missing: %s", m.Payload)
			}
			switch m.ID {
			case "all":
				statuses[id] = append(statuses[id], st)
			case "done":
				if st != "succeeded" {
					t.Fatalf("filtered subscription received %s", st)
				}
				succeeded[id] = true
			}
		}
	}
	// The subscriptions are registered asynchronously: a warm-up run seen
	// finishing on both of them shows they are live before the runs under
	// test start, so none of those runs' status changes can be missed.
	warm := a.start(t)
	ours[warm] = true
	readUntil(func() bool { return succeeded[warm] && lastIs(warm, "succeeded") })

	bRun = b.start(t)
	aRun := a.start(t)
	ours[aRun] = true
	waitRun(t, b.owner, bRun, subTimeout, "succeeded")
	// A marker run started after B finished: its updates come after
	// anything of B's the hub could have leaked.
	marker := a.start(t)
	ours[marker] = true
	readUntil(func() bool { return succeeded[aRun] && succeeded[marker] && lastIs(aRun, "succeeded") })
	got := statuses[aRun]
	if len(got) < 2 || got[len(got)-1] != "succeeded" {
		t.Fatalf("status changes of A's run: %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] == got[i-1] {
			t.Fatalf("an update without a status or cost change: %v", got)
		}
	}
}

func TestSubscriptionRunEventsOverSSE(t *testing.T) {
	t.Parallel()
	lt := newLiveTenant(t, "sub-sse", subChainDefinition(2))
	runID := lt.start(t)
	body, _ := json.Marshal(map[string]any{"query": sRunEvents, "variables": map[string]any{"id": runID}})
	req, _ := http.NewRequest(http.MethodPost, server(1).url+"/graphql", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+token(t, lt.tenantID, "viewer"))
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("SSE: status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var got []subEvent
	completed := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && !completed {
		line := sc.Text()
		switch {
		case line == "event: complete":
			completed = true
		case strings.HasPrefix(line, "data: "):
			var p struct {
				Data   map[string]any `json:"data"`
				Errors []gqlError     `json:"errors"`
			}
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &p); err != nil || len(p.Errors) > 0 {
				t.Fatalf("SSE frame: %s", line)
			}
			got = append(got, subEvent{Seq: int(get(p.Data, "runEvents.seq").(float64)), Type: str(p.Data, "runEvents.type")})
		}
	}
	if !completed {
		t.Fatalf("SSE stream ended without completing (%v) after %v", sc.Err(), subTypes(got))
	}
	subCheckGapless(t, got, 1)
	if stored := subStoredEvents(t, lt.owner, runID); strings.Join(subTypes(got), ",") != strings.Join(stored, ",") {
		t.Fatalf("SSE delivered %v, log has %v", subTypes(got), stored)
	}
}

func TestSubscriptionEndsWithResumeHintAtShutdown(t *testing.T) {
	t.Parallel()
	st := newStack(t, 0)
	lt := newLiveTenant(t, "sub-stop", map[string]any{"schemaVersion": 1, "steps": []any{
		map[string]any{"id": "wait", "type": "delay", "duration": "1h"},
	}})
	runID := lt.start(t)
	w := connectWS(t, st.server, wsBearer(token(t, lt.tenantID, "viewer")))
	w.subscribe("s", sRunEvents, map[string]any{"id": runID})
	seen := w.events("s", func(ev []subEvent) bool { return ev[len(ev)-1].Type == "run.waiting" })
	last := seen[len(seen)-1].Seq

	stopped := make(chan struct{})
	go func() { st.server.stop(); close(stopped) }()
	ctx, cancel := context.WithTimeout(context.Background(), subTimeout)
	defer cancel()
	f, err := w.next(ctx, "s")
	if err != nil {
		t.Fatalf("no message before the connection ended: %v", err)
	}
	want := fmt.Sprintf("server shutting down: resume with afterSeq=%d", last)
	if len(f.Errors) == 0 || f.Errors[0].Message != want || f.Errors[0].Extensions["afterSeq"] != float64(last) {
		t.Fatalf("want %q with extensions.afterSeq, got %s %s", want, f.Type, f.Raw)
	}
	for {
		m, err := w.read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				t.Fatal("the connection stayed open after shutdown")
			}
			if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Fatalf("want a clean close at shutdown, got %v", err)
			}
			break
		}
		if m.Type != "complete" {
			t.Fatalf("after the resume hint: %+v", m)
		}
	}
	<-stopped
}
