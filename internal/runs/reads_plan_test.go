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
// admission count at every startRun.
func TestHotFunctionsKeepCachedPlans(t *testing.T) {
	t.Parallel()
	x := newH(t)
	x.in(func(ctx context.Context, _ *ent.Client) error {
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		want := []string{"sluice_admit_steps", "sluice_claim_slot", "sluice_member_roles", "sluice_release_held"}
		rows, err := q.Query(ctx, `SELECT proname FROM pg_proc WHERE proname = ANY($1) AND 'plan_cache_mode=auto' = ANY(proconfig) ORDER BY proname`, want)
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
