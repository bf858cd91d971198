package cli

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// benchSLAScenario is `sluice bench --only sla`: the SLA sweep's cost with
// many unfinished runs of which few are past their deadline.
const benchSLAScenario = "sla"

// Sizes of the SLA scenario: running runs, of which late are past due.
const (
	benchSLARuns = 100000
	benchSLALate = 100
	// benchSLAFinished runs finished in the last 30 minutes feed the
	// window aggregate's plan.
	benchSLAFinished = 20000
)

type noDispatch struct{}

func (noDispatch) Dispatch(context.Context, []tasks.Task) error { return nil }

// benchSLA inserts benchSLARuns running runs of the benchmark tenant in
// plain SQL (as the owner, foreign-key triggers off: the runs name a
// workflow that does not exist), benchSLALate of them past a maxDuration
// deadline, runs one sweep as a worker does (the app role, RLS on) and
// prints its duration and the plan of its query.
func benchSLA(ctx context.Context, ownerURL, appURL, tenantID string, stdout io.Writer) error {
	owner, err := sql.Open("pgx", ownerURL)
	if err != nil {
		return err
	}
	defer owner.Close()
	conn, err := owner.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	now := time.Now().UTC().Truncate(time.Microsecond)
	objectives := `{"maxDuration": {"severity": "ERROR", "duration": "1m"}}`
	setup := []string{
		`SET session_replication_role = replica`,
		`DELETE FROM sla_policies WHERE tenant_id = $1`,
	}
	for _, q := range setup {
		args := []any{}
		if strings.Contains(q, "$1") {
			args = append(args, tenantID)
		}
		if _, err := conn.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("sla bench setup: %w", err)
		}
	}
	if _, err := conn.ExecContext(ctx, `INSERT INTO sla_policies (id, created_at, updated_at, scope_key, name, objectives, created_by, tenant_id)
		VALUES ($1, $2, $2, '', 'bench', $3, 'bench', $4)`, ids.New(ids.SLAPolicy), now, objectives, tenantID); err != nil {
		return fmt.Errorf("sla bench policy: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `UPDATE tenants SET sla_version = sla_version + 1 WHERE id = $1`, tenantID); err != nil {
		return err
	}
	began := time.Now()
	// Runs 1..late started 2 minutes ago (due a minute ago), the others 30
	// seconds ago (due in 30 seconds).
	_, err = conn.ExecContext(ctx, `INSERT INTO runs (id, tenant_id, created_at, updated_at, workflow_id, version_id, environment_id, status, mode,
		input, input_hash, cost_micro_usd, next_seq, trace_id, created_by, depth, started_at, sla_deadline_at, sla_check_at)
		SELECT 'run_bench' || lpad(g::text, 8, '0'), $1, c, c, 'wf_bench', 'wfv_bench', 'env_bench', 'running', 'live',
			'{}', '', 0, 1, '', 'bench', 1, c, c + interval '1 minute', c + interval '1 minute'
		FROM generate_series(1, $2::int) AS g,
			LATERAL (SELECT CASE WHEN g <= $3 THEN $4::timestamptz - interval '2 minutes' ELSE $4::timestamptz - interval '30 seconds' END AS c) AS t`,
		tenantID, benchSLARuns, benchSLALate, now)
	if err != nil {
		return fmt.Errorf("sla bench runs: %w", err)
	}
	// And runs finished in the last 30 minutes, for the window aggregate.
	_, err = conn.ExecContext(ctx, `INSERT INTO runs (id, tenant_id, created_at, updated_at, workflow_id, version_id, environment_id, status, mode,
		input, input_hash, cost_micro_usd, next_seq, trace_id, created_by, depth, started_at, finished_at, error_class)
		SELECT 'run_benchdone' || lpad(g::text, 8, '0'), $1, f, f, 'wf_bench', 'wfv_bench', 'env_bench',
			CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END, 'live', '{}', '', 1000, 1, '', 'bench', 1, f, f,
			CASE WHEN g % 10 = 0 THEN 'transient' END
		FROM generate_series(1, $2::int) AS g, LATERAL (SELECT $3::timestamptz - (g % 1800) * interval '1 second' AS f) AS t`,
		tenantID, benchSLAFinished, now)
	if err != nil {
		return fmt.Errorf("sla bench finished runs: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `ANALYZE runs`); err != nil {
		return err
	}
	inserted := time.Since(began)

	db, err := store.Open(ctx, appURL, 4)
	if err != nil {
		return err
	}
	defer db.Close()
	client := store.NewClient(db)
	hooks := webhook.NewService(webhook.ServiceOptions{Client: client, Dispatcher: noDispatch{}})
	s := sla.New(sla.Options{Client: client, Events: hooks, Now: func() time.Time { return now }})
	// The plans of the sweep's query and of the window aggregate, as the
	// app role sees them (RLS on).
	explain := func(query string, args ...any) ([]string, error) {
		var plan []string
		err := store.InTenant(viewer.SystemContext(ctx, tenantID), client, func(ctx context.Context) error {
			q, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			rows, err := q.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+query, args...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					return err
				}
				plan = append(plan, line)
			}
			return rows.Err()
		})
		return plan, err
	}
	plan, err := explain(sla.DueRunsSQL, tenantID, now, 500)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	windowPlan, err := explain(sla.WindowAggregateSQL, tenantID, now.Add(-time.Hour), now)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	// The sweep's read of recently finished runs.
	finishedPlan, err := explain(sla.FinishedRunsSQL, tenantID, now.Add(-2*time.Minute), 500)
	if err != nil {
		return fmt.Errorf("explain: %w", err)
	}
	start := time.Now()
	rep, err := s.Sweep(ctx)
	took := time.Since(start)
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var breaches, incidents int
	err = store.InTenant(viewer.SystemContext(ctx, tenantID), client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		if breaches, err = c.SLABreach.Query().Count(ctx); err != nil {
			return err
		}
		incidents, err = c.Incident.Query().Count(ctx)
		return err
	})
	if err != nil {
		return err
	}
	seq := false
	for _, l := range slices.Concat(plan, windowPlan, finishedPlan) {
		if strings.Contains(l, "Seq Scan on runs") {
			seq = true
		}
	}
	fmt.Fprintf(stdout, "sla       %d running runs, %d past their deadline, %d finished in the last 30m (inserted in %s)\n", benchSLARuns, benchSLALate, benchSLAFinished, inserted.Round(time.Millisecond))
	fmt.Fprintf(stdout, "sla       one sweep: %s; %d runs judged, %d breaches recorded (%d in sla_breaches), %d incident(s)\n",
		took.Round(time.Microsecond), rep.Runs, rep.Breaches, breaches, incidents)
	fmt.Fprintf(stdout, "sla       sequential scan of runs (either query): %v\nsla       plan of the due-runs query:\n", seq)
	for _, l := range plan {
		fmt.Fprintf(stdout, "            %s\n", l)
	}
	fmt.Fprintf(stdout, "sla       plan of the window aggregate (runs finished in the last hour):\n")
	for _, l := range windowPlan {
		fmt.Fprintf(stdout, "            %s\n", l)
	}
	fmt.Fprintf(stdout, "sla       plan of the sweep's read of runs finished in the last 2 minutes:\n")
	for _, l := range finishedPlan {
		fmt.Fprintf(stdout, "            %s\n", l)
	}
	if breaches != benchSLALate || seq {
		return fmt.Errorf("sla bench: %d breaches (want %d), sequential scan %v", breaches, benchSLALate, seq)
	}
	return nil
}
