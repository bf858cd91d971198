package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// GraphQL documents the benchmark sends, the same a client application would.
const (
	qEnvironments = `{ environments { edges { node { id name } } } }`
	mCreateWF     = `mutation($n: String!, $s: String!) { createWorkflow(input: {name: $n, slug: $s}) { id } }`
	mCreateVer    = `mutation($w: ID!, $d: Map!) { createWorkflowVersion(input: {workflowID: $w, definition: $d}) { id } }`
	mPublish      = `mutation($id: ID!) { publishWorkflowVersion(id: $id) { id } }`
	mDeploy       = `mutation($v: ID!, $e: ID!) { deployWorkflowVersion(input: {versionID: $v, environmentID: $e}) { id } }`
	mStartRun     = `mutation($w: ID!, $e: ID!, $i: Map) { startRun(input: {workflowID: $w, environmentID: $e, input: $i}) { id } }`
	mApprove      = `mutation($id: ID!) { decideApproval(input: {id: $id, decision: APPROVE}) { id } }`
	qRunStatuses  = `query($ids: [ID!]!) { nodes(ids: $ids) { ... on Run { id status createdAt finishedAt error { class message } } } }`
	qRunEvents    = `query($id: ID!, $after: Int) { node(id: $id) { ... on Run { events(afterSeq: $after, first: 1000) { seq type stepID at } } } }`
)

// client speaks GraphQL over HTTP to one API process as one caller.
type client struct {
	url   string // .../graphql
	token string
	http  *http.Client
}

func newClient(apiURL, token string) *client {
	return &client{
		url:   strings.TrimSuffix(apiURL, "/") + "/graphql",
		token: token,
		http: &http.Client{Timeout: time.Minute, Transport: &http.Transport{
			// Up to a few hundred calls are in flight at once (200 runs in
			// flight, startRun at a fixed rate); keep their connections.
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     time.Minute,
		}},
	}
}

// call posts one operation; GraphQL errors are errors.
func (c *client) call(ctx context.Context, query string, vars map[string]any) (map[string]any, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var decoded struct {
		Data   map[string]any    `json:"data"`
		Errors []json.RawMessage `json:"errors"`
	}
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return nil, fmt.Errorf("%s: status %d, not JSON: %.300s", opName(query), resp.StatusCode, raw)
	}
	if len(decoded.Errors) > 0 {
		return nil, fmt.Errorf("%s: %.500s", opName(query), raw)
	}
	return decoded.Data, nil
}

// opName names an operation in errors by its first field.
func opName(query string) string {
	q := query
	if i := strings.Index(q, "{"); i >= 0 {
		q = q[i+1:]
	}
	if f := strings.Fields(strings.NewReplacer("(", " ", "{", " ").Replace(q)); len(f) > 0 {
		return f[0]
	}
	return "graphql"
}

// environment returns the id of the tenant's environment called name.
func (c *client) environment(ctx context.Context, name string) (string, error) {
	d, err := c.call(ctx, qEnvironments, nil)
	if err != nil {
		return "", err
	}
	list, _ := path(d, "environments.edges").([]any)
	for _, e := range list {
		if path(e, "node.name") == name {
			return str(e, "node.id"), nil
		}
	}
	return "", fmt.Errorf("the tenant has no %q environment", name)
}

// deploy creates, publishes and deploys a workflow with def in envID and
// returns the workflow id.
func (c *client) deploy(ctx context.Context, envID, slug string, def map[string]any) (string, error) {
	d, err := c.call(ctx, mCreateWF, map[string]any{"n": slug, "s": slug})
	if err != nil {
		return "", err
	}
	wf := str(d, "createWorkflow.id")
	if d, err = c.call(ctx, mCreateVer, map[string]any{"w": wf, "d": def}); err != nil {
		return "", err
	}
	v := str(d, "createWorkflowVersion.id")
	if _, err := c.call(ctx, mPublish, map[string]any{"id": v}); err != nil {
		return "", err
	}
	if _, err := c.call(ctx, mDeploy, map[string]any{"v": v, "e": envID}); err != nil {
		return "", err
	}
	return wf, nil
}

// startRun starts one run and returns its id.
func (c *client) startRun(ctx context.Context, wf, envID string, input map[string]any) (string, error) {
	d, err := c.call(ctx, mStartRun, map[string]any{"w": wf, "e": envID, "i": input})
	if err != nil {
		return "", err
	}
	id := str(d, "startRun.id")
	if id == "" {
		return "", errors.New("startRun returned no id")
	}
	return id, nil
}

// runStatus is a run as the status query reads it.
type runStatus struct {
	ID         string
	Status     string
	CreatedAt  time.Time
	FinishedAt time.Time
	Error      string
}

func (r runStatus) terminal() bool {
	return r.Status == "succeeded" || r.Status == "failed" || r.Status == "cancelled"
}

// statuses reads the status of every run in ids, 100 per call.
func (c *client) statuses(ctx context.Context, ids []string) (map[string]runStatus, error) {
	out := make(map[string]runStatus, len(ids))
	for start := 0; start < len(ids); start += 100 {
		d, err := c.call(ctx, qRunStatuses, map[string]any{"ids": ids[start:min(start+100, len(ids))]})
		if err != nil {
			return nil, err
		}
		list, _ := d["nodes"].([]any)
		for _, n := range list {
			r := runStatus{ID: str(n, "id"), Status: str(n, "status")}
			r.CreatedAt, _ = time.Parse(time.RFC3339Nano, str(n, "createdAt"))
			r.FinishedAt, _ = time.Parse(time.RFC3339Nano, str(n, "finishedAt"))
			if cl := str(n, "error.class"); cl != "" {
				r.Error = cl + ": " + str(n, "error.message")
			}
			out[r.ID] = r
		}
	}
	return out, nil
}

// runEvent is one event of a run's log.
type runEvent struct {
	Seq    int
	Type   string
	StepID string
	At     time.Time
}

// events reads a run's whole event log, a page at a time.
func (c *client) events(ctx context.Context, runID string) ([]runEvent, error) {
	var out []runEvent
	after := 0
	for {
		d, err := c.call(ctx, qRunEvents, map[string]any{"id": runID, "after": after})
		if err != nil {
			return nil, err
		}
		list, _ := path(d, "node.events").([]any)
		if len(list) == 0 {
			return out, nil
		}
		for _, e := range list {
			seq, _ := path(e, "seq").(float64)
			at, err := time.Parse(time.RFC3339Nano, str(e, "at"))
			if err != nil {
				return nil, fmt.Errorf("event at: %w", err)
			}
			out = append(out, runEvent{Seq: int(seq), Type: str(e, "type"), StepID: str(e, "stepID"), At: at})
			after = int(seq)
		}
	}
}

// path walks decoded JSON along a dotted path ("startRun.id").
func path(data any, p string) any {
	cur := data
	for _, k := range strings.Split(p, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func str(data any, p string) string {
	s, _ := path(data, p).(string)
	return s
}
