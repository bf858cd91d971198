package testdb

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/internal/store"
)

// Plan returns the plan Postgres runs a statement with in the transaction
// in ctx: the statement is prepared with the parameter types given,
// executed `runs` times (Postgres's own plan mode keeps a generic plan only
// after five executions, and only when it costs no more than the custom
// ones), then executed once more under EXPLAIN ANALYZE. Sequential scans
// are off, so a test's tiny tables get the plan a large table would. The
// arguments go in as SQL literals (EXPLAIN takes no parameters): callers
// pass plain ids, numbers, timestamps and arrays of them. Plan modes and
// statistics are the caller's (SET LOCAL plan_cache_mode, ANALYZE).
func Plan(ctx context.Context, types, query string, runs int, literals ...string) (string, error) {
	q, err := store.Raw(ctx)
	if err != nil {
		return "", err
	}
	execute := `EXECUTE explained(` + strings.Join(literals, ", ") + `)`
	stmts := []string{`SET LOCAL enable_seqscan = off`, `PREPARE explained(` + types + `) AS ` + query}
	for range runs {
		stmts = append(stmts, execute)
	}
	for _, st := range stmts {
		if _, err := q.Exec(ctx, st); err != nil {
			return "", err
		}
	}
	defer q.Exec(ctx, `DEALLOCATE explained`) //nolint:errcheck // the transaction ends next
	rows, err := q.Query(ctx, `EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) `+execute)
	if err != nil {
		return "", err
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(plan, "\n"), err
}
