package e2e

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
)

// benchTenant creates a tenant through the CLI, mints an owner token and
// returns it with the tenant's development environment id. It returns an
// error rather than failing b, so a benchmark can run it once for all.
func benchTenant(b testing.TB, prefix string) (tok, envID string, err error) {
	slug := prefix + "-" + randHex(3)
	out, err := cli("tenant", "create", "--slug", slug, "--name", "Tenant "+slug)
	if err != nil {
		return "", "", fmt.Errorf("tenant create: %v\n%s", err, out)
	}
	tid := strings.TrimSpace(out)
	tok, err = auth.MintHS256([]byte(jwtSecret), jwtIssuer, jwtAudience,
		auth.Claims{Subject: "bench@e2e.test", TenantID: tid, Roles: []string{"owner"}}, time.Hour)
	if err != nil {
		return "", "", err
	}
	d, err := newClient(b, 0, tok).tryOK(qEnvironments, nil)
	if err != nil {
		return "", "", err
	}
	for _, e := range edges(d, "environments") {
		if e["name"] == "development" {
			return tok, e["id"].(string), nil
		}
	}
	return "", "", errors.New("no development environment")
}

// deployDef creates, publishes and deploys def and returns the workflow id.
func (g *client) deployDef(envID, slug string, def map[string]any) (string, error) {
	d, err := g.tryOK(mCreateWF, map[string]any{"n": slug, "s": slug})
	if err != nil {
		return "", err
	}
	wf := str(d, "createWorkflow.id")
	if d, err = g.tryOK(mCreateVer, map[string]any{"w": wf, "d": def}); err != nil {
		return "", err
	}
	v := str(d, "createWorkflowVersion.id")
	if _, err := g.tryOK(mPublish, map[string]any{"id": v}); err != nil {
		return "", err
	}
	if _, err := g.tryOK(mDeploy, map[string]any{"v": v, "e": envID}); err != nil {
		return "", err
	}
	return wf, nil
}

// startRuns starts n runs of wf with `workers` concurrent callers, at most
// one start per `every` when it is positive. input(i) gives run i's input;
// started (if not nil) is called after each start. It returns the run ids in
// start order, or the first error.
func (g *client) startRuns(wf, envID string, n, workers int, every time.Duration, input func(i int) map[string]any, started func(done int)) ([]string, error) {
	ids := make([]string, n)
	batch := randHex(4) // a retried start reuses its key; another batch does not
	var tick <-chan time.Time
	if every > 0 {
		tk := time.NewTicker(every)
		defer tk.Stop()
		tick = tk.C
	}
	var next, done atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if tick != nil {
					<-tick
				}
				// Retry transport errors a few times: the API process is
				// never killed, but the machine is busy.
				var d map[string]any
				var err error
				for try := 0; try < 3; try++ {
					if d, err = g.tryOK(mStartRun, map[string]any{"w": wf, "e": envID, "i": input(i), "k": fmt.Sprintf("start-%s-%d", batch, i)}); err == nil {
						break
					}
					time.Sleep(200 * time.Millisecond) // retry pacing: a busy API process, not a wait for an outcome
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("start run %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				ids[i] = str(d, "startRun.id")
				if started != nil {
					started(int(done.Add(1)))
				}
			}
		}()
	}
	wg.Wait()
	return ids, firstErr
}

const qRunStatuses = `query($ids: [ID!]!) { nodes(ids: $ids) { ... on Run { id status } } }`

// statuses returns the status of every run in ids.
func (g *client) statuses(ids []string) (map[string]string, error) {
	out := make(map[string]string, len(ids))
	for start := 0; start < len(ids); start += 100 {
		batch := ids[start:min(start+100, len(ids))]
		d, err := g.tryOK(qRunStatuses, map[string]any{"ids": batch})
		if err != nil {
			return nil, err
		}
		list, _ := d["nodes"].([]any)
		for _, n := range list {
			if m, ok := n.(map[string]any); ok {
				out[str(m, "id")] = str(m, "status")
			}
		}
	}
	return out, nil
}

func isTerminal(status string) bool {
	return status == "succeeded" || status == "failed" || status == "cancelled"
}

// countTerminal counts the runs of m whose status is terminal.
func countTerminal(m map[string]string) int {
	n := 0
	for _, s := range m {
		if isTerminal(s) {
			n++
		}
	}
	return n
}

// waitTerminal polls until every run in ids is terminal or timeout passes,
// and returns the last statuses seen.
func (g *client) waitTerminal(ids []string, timeout time.Duration) (map[string]string, error) {
	var last map[string]string
	var lastErr error
	// Every 250ms: each look fetches hundreds of runs.
	err := poll(timeout, 250*time.Millisecond, func() (bool, string) {
		m, err := g.statuses(ids)
		if err != nil {
			lastErr = err
			return false, err.Error()
		}
		last, lastErr = m, nil
		return countTerminal(m) == len(ids), fmt.Sprintf("%d of %d runs terminal", countTerminal(m), len(ids))
	})
	if err == nil {
		return last, nil
	}
	return last, lastErr
}

const qRunDetails = `query($ids: [ID!]!) { nodes(ids: $ids) { ... on Run { id status output
	steps { stepID status attempts output attemptList { number status } }
	events { seq type stepID attempt at } } } }`

// runDetails fetches the steps, attempts and events of every run in ids.
func (g *client) runDetails(ids []string) (map[string]map[string]any, error) {
	out := make(map[string]map[string]any, len(ids))
	for start := 0; start < len(ids); start += 20 {
		batch := ids[start:min(start+20, len(ids))]
		d, err := g.tryOK(qRunDetails, map[string]any{"ids": batch})
		if err != nil {
			return nil, err
		}
		list, _ := d["nodes"].([]any)
		for _, n := range list {
			if m, ok := n.(map[string]any); ok {
				out[str(m, "id")] = m
			}
		}
	}
	return out, nil
}

// stepsWithID returns every step entry of run whose stepID is id.
func stepsWithID(run map[string]any, id string) []map[string]any {
	var out []map[string]any
	list, _ := run["steps"].([]any)
	for _, s := range list {
		if m, ok := s.(map[string]any); ok && m["stepID"] == id {
			out = append(out, m)
		}
	}
	return out
}

// eventsOf returns the events of run with type typ and stepID step.
func eventsOf(run map[string]any, typ, step string) []map[string]any {
	var out []map[string]any
	list, _ := run["events"].([]any)
	for _, e := range list {
		if m, ok := e.(map[string]any); ok && m["type"] == typ && (step == "" || m["stepID"] == step) {
			out = append(out, m)
		}
	}
	return out
}
