package runs

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
)

// explain is testdb.Plan under the plan mode given.
func explain(ctx context.Context, mode string, runs int, types, query string, literals ...string) (string, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return "", err
	}
	if _, err := q.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode); err != nil {
		return "", err
	}
	return testdb.Plan(ctx, types, query, runs, literals...)
}

// A claim reads the steps it needs by name. Under the cached (generic)
// plan the state machine's statements use, that read must descend the
// (tenant_id, run_id, step_id) index once per name, not scan every step of
// the run and filter: in a run of n steps the scan made each claim read n
// rows and the run's claims n².
func TestStepReadsDescendPerStep(t *testing.T) {
	t.Parallel()
	x := newH(t)
	var list []map[string]any
	for i := range 60 {
		list = append(list, map[string]any{"id": fmt.Sprintf("s%d", i), "type": "transform", "output": "1"})
	}
	id := x.start(x.deploy(def("", list...)), map[string]any{})
	x.in(func(ctx context.Context, _ *ent.Client) error {
		// Asked twice for one step, the read returns it once.
		got, err := stepRows(ctx, x.tenantID, id, []string{"s42", "s7", "s42"})
		if err != nil {
			return err
		}
		var names []string
		for _, sr := range got {
			names = append(names, sr.StepID)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"s42", "s7"}) {
			t.Errorf("read steps %v, want s42 and s7", names)
		}
		// A few names: one lookup each, and Postgres keeps the statement's
		// generic plan (its Index Cond names parameters, not the values).
		query, _ := stepsByID(x.tenantID, id, []string{"s7", "s42"})
		plan, err := explain(ctx, "auto", 6, "text, text, text, text", query, "'"+x.tenantID+"'", "'"+id+"'", "'s7'", "'s42'")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`Index Cond: .*step_id\)::text = \$3`).MatchString(plan) {
			t.Errorf("Postgres does not keep a generic plan that looks the steps up by name:\n%s", plan)
		}
		if m := regexp.MustCompile(`Rows Removed by Filter: (\d+)`).FindStringSubmatch(plan); m != nil {
			t.Errorf("the plan reads steps it was not asked for (%s rows filtered out):\n%s", m[1], plan)
		}
		// Many names: one lookup per element of the array.
		var asked, many []string
		for i := range stepsByIDBranches + 2 {
			asked = append(asked, fmt.Sprintf("s%d", i*5))
			many = append(many, "'"+asked[i]+"'")
		}
		query, _ = stepsByID(x.tenantID, id, asked)
		plan, err = explain(ctx, "force_generic_plan", 0, "text, text, text[]", query, "'"+x.tenantID+"'", "'"+id+"'", "ARRAY["+strings.Join(many, ", ")+"]")
		if err != nil {
			return err
		}
		if !regexp.MustCompile(`Index Cond: .*step_id`).MatchString(plan) || strings.Contains(plan, "Rows Removed by Filter") {
			t.Errorf("the generic plan of the array's lookups does not look each step up by name:\n%s", plan)
		}
		return nil
	})
}

// The reconciler looks, every sweep, for workflow steps whose child run
// ended without telling them. Such a step has no ready_at, so the indexes
// the sweep's other reads use do not hold it; the check must read only
// the steps waiting on a child (a partial index), not every step the
// tenant ever ran.
func TestDueChildCheckReadsOnlyWaitingChildSteps(t *testing.T) {
	t.Parallel()
	x := newH(t)
	wf := x.deploy(def("", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	for range 5 {
		x.start(wf, map[string]any{})
	}
	x.in(func(ctx context.Context, _ *ent.Client) error {
		plan, err := explain(ctx, "force_custom_plan", 0, "text, timestamptz", dueChildStepsSQL, "'"+x.tenantID+"'", "now()")
		if err != nil {
			return err
		}
		if !strings.Contains(plan, "steprun_waiting_child") {
			t.Errorf("the check does not read the waiting child steps' index:\n%s", plan)
		}
		if m := regexp.MustCompile(`on step_runs s.*\n(?:.*\n)*?.*Rows Removed by Filter: (\d+)`).FindStringSubmatch(plan); m != nil {
			t.Errorf("the check reads steps that are not waiting on a child (%s filtered out):\n%s", m[1], plan)
		}
		return nil
	})
}

// The SQL functions on the run hot path cache their queries' plans even
// when their caller asks for custom plans (API transactions do, see
// internal/store): they were otherwise planned again at every call, the
// admission count at every startRun. Only PL/pgSQL keeps a function's
// plans from one call to the next (a SQL function that is not inlined is
// planned at each), so they are written in it.
func TestHotFunctionsKeepCachedPlans(t *testing.T) {
	t.Parallel()
	x := newH(t)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		want := []string{"sluice_admit_steps", "sluice_claim_slot", "sluice_member_roles", "sluice_release_held"}
		rows, err := q.Query(ctx, `SELECT p.proname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
			WHERE p.proname = ANY($1) AND 'plan_cache_mode=auto' = ANY(p.proconfig) AND l.lanname = 'plpgsql' ORDER BY p.proname`, want)
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		if !slices.Equal(got, want) {
			t.Errorf("functions that keep cached plans: %v, want %v", got, want)
		}
		return nil
	})
}

// startRun runs in the API's transaction, which asks Postgres for custom
// plans (internal/store), but its statements read and write rows by unique
// keys and are sent at every start: it switches to cached plans
// (store.CachedPlans), which also spares the foreign-key checks of its
// inserts a planning each. On one connection, after eight starts, every
// statement sent at each of them has been run with a cached generic plan,
// and the reads' generic plans scan what the plans made for each call
// scanned.
func TestStartRunKeepsCachedPlans(t *testing.T) {
	t.Parallel()
	x := newH(t)
	wf := x.deploy(def("", map[string]any{"id": "a", "type": "transform", "output": "1"},
		map[string]any{"id": "b", "type": "transform", "needs": []any{"a"}, "output": "2"}))
	for range 4 { // other deployments of the tenant, which a scan would read
		x.deploy(def("", map[string]any{"id": "a", "type": "transform", "output": "1"}))
	}
	for range 30 { // and other runs
		x.start(wf, map[string]any{})
	}
	ctx := context.Background()
	db, err := store.Open(ctx, testDB.AppURL, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	client := store.NewClient(db)
	for i := range 8 {
		key := fmt.Sprintf("start-%d", i)
		if err := store.InTenant(x.ctx, client, func(ctx context.Context) error {
			_, err := x.e.StartRun(ctx, StartRunInput{WorkflowID: wf, EnvironmentID: x.envID, Input: map[string]any{}, IdempotencyKey: &key})
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	err = store.InTenant(x.ctx, client, func(ctx context.Context) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		rows, err := q.Query(ctx, `SELECT name, statement, generic_plans, custom_plans FROM pg_prepared_statements
			WHERE generic_plans + custom_plans >= 8 ORDER BY statement`)
		if err != nil {
			return err
		}
		type prepared struct {
			Name, Statement      string
			GenericPlans, Custom int64
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[prepared])
		if err != nil {
			return err
		}
		var deployments, byKey string
		for _, p := range list {
			if p.GenericPlans == 0 {
				t.Errorf("planned at each of its %d executions: %.300s", p.Custom, p.Statement)
			}
			switch {
			case strings.Contains(p.Statement, `"deployments"."version_id"`):
				deployments = p.Name
			case strings.Contains(p.Statement, `"runs"."idempotency_key" =`):
				byKey = p.Name
			}
		}
		if deployments == "" || byKey == "" || len(list) < 6 {
			t.Fatalf("the starts' statements on the connection (deployment read %q, idempotency read %q):\n%v", deployments, byKey, list)
		}
		// The reads' cached plans find rows the way the plans made at every
		// call did: the same index scans, whichever indexes the tables'
		// statistics favour (here none: a table without statistics gives
		// both plans the same estimates).
		reads := map[string]string{
			deployments: fmt.Sprintf("'%s', '%s', '%s'", wf, x.envID, x.tenantID),
			byKey:       fmt.Sprintf("'start-3', '%s'", x.tenantID),
		}
		scans := regexp.MustCompile(`(?m)(Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)( using \S+)? on \S+`)
		for name, args := range reads {
			var plans [2]string
			for i, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				if _, err := q.Exec(ctx, `SET LOCAL plan_cache_mode = `+mode); err != nil {
					return err
				}
				rows, err := q.Query(ctx, `EXPLAIN (COSTS OFF) EXECUTE `+name+`(`+args+`)`)
				if err != nil {
					return err
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				plans[i] = strings.Join(scans.FindAllString(strings.Join(lines, "\n"), -1), "\n")
			}
			if plans[0] != plans[1] || plans[1] == "" || strings.Contains(plans[1], "Seq Scan") {
				t.Errorf("the cached plan reads rows otherwise than the plan made for the call:\ncustom:\n%s\ngeneric:\n%s", plans[0], plans[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
