package runs

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/store"
)

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
	want := []string{"s7", "s42"}
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
		q, err := store.Raw(ctx)
		if err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `SET LOCAL plan_cache_mode = force_generic_plan`); err != nil {
			return err
		}
		if _, err := q.Exec(ctx, `PREPARE steps_by_id(text, text, text[]) AS `+stepsByIDSQL); err != nil {
			return err
		}
		defer q.Exec(ctx, `DEALLOCATE steps_by_id`) //nolint:errcheck // the transaction ends next
		// EXPLAIN takes no parameters: the ids are plain letters and digits.
		rows, err := q.Query(ctx, fmt.Sprintf(`EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) EXECUTE steps_by_id('%s', '%s', ARRAY['%s'])`,
			x.tenantID, id, strings.Join(want, "','")))
		if err != nil {
			return err
		}
		var plan []string
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				return err
			}
			plan = append(plan, line)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		text := strings.Join(plan, "\n")
		if m := regexp.MustCompile(`Rows Removed by Filter: (\d+)`).FindStringSubmatch(text); m != nil {
			t.Errorf("the generic plan reads steps it was not asked for (%s rows filtered out):\n%s", m[1], text)
		}
		if !regexp.MustCompile(`Index Cond: .*step_id`).MatchString(text) {
			t.Errorf("the generic plan does not look steps up by name in the index:\n%s", text)
		}
		return nil
	})
}
