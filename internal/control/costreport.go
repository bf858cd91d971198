package control

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// CostGroup is a dimension a cost report can group by.
type CostGroup string

const (
	GroupWorkflow    CostGroup = "WORKFLOW"
	GroupVersion     CostGroup = "VERSION"
	GroupEnvironment CostGroup = "ENVIRONMENT"
	GroupModel       CostGroup = "MODEL"
	GroupDay         CostGroup = "DAY"
)

// costColumns maps each group to the SQL it selects; the only SQL built
// from input, and built from this fixed list only.
var costColumns = map[CostGroup][]string{
	GroupWorkflow:    {"workflow_id"},
	GroupVersion:     {"version_id"},
	GroupEnvironment: {"environment_id"},
	GroupModel:       {"provider", "model"},
	GroupDay:         {"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"},
}

// CostRow is one group of a cost report; unset keys were not grouped by.
type CostRow struct {
	WorkflowID, VersionID, EnvironmentID, Provider, Model, Day    *string
	Calls, InputTokens, OutputTokens, CostMicroUSD, UnpricedCalls int64
}

// maxReportSpan bounds a cost report's time range.
const maxReportSpan = 366 * 24 * time.Hour

// CostReport aggregates model call cost in [from, to) in SQL.
func (s *Service) CostReport(ctx context.Context, from, to time.Time, groups []CostGroup) ([]CostRow, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if !to.After(from) {
		return nil, errs.Invalid("to", "must be after from")
	}
	if to.Sub(from) > maxReportSpan {
		return nil, errs.Invalid("to", "a report spans at most 366 days")
	}
	var cols []string
	var order []CostGroup
	seen := map[CostGroup]bool{}
	for i, g := range groups {
		exprs, ok := costColumns[g]
		if !ok {
			return nil, errs.Invalid(fmt.Sprintf("groupBy[%d]", i), "unknown group %q", g)
		}
		if seen[g] {
			continue
		}
		seen[g] = true
		order = append(order, g)
		cols = append(cols, exprs...)
	}
	sel := "count(*), coalesce(sum(input_tokens),0), coalesce(sum(output_tokens),0), coalesce(sum(cost_micro_usd),0), count(*) FILTER (WHERE NOT priced)"
	q := "SELECT " + sel
	if len(cols) > 0 {
		q = "SELECT " + strings.Join(cols, ", ") + ", " + sel
	}
	q += " FROM model_calls WHERE tenant_id = $1 AND created_at >= $2 AND created_at < $3"
	args := []any{v.TenantID, from.UTC(), to.UTC()}
	if v.EnvironmentID != "" {
		// This SQL bypasses Ent's privacy rules: a key scoped to one
		// environment reports that environment's calls only.
		q += " AND environment_id = $4"
		args = append(args, v.EnvironmentID)
	}
	if len(cols) > 0 {
		q += " GROUP BY " + strings.Join(cols, ", ") + " ORDER BY " + strings.Join(cols, ", ")
	}
	rows, err := c.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("cost report: %w", err)
	}
	defer rows.Close()
	var out []CostRow
	for rows.Next() {
		var r CostRow
		keys := make([]sql.NullString, len(cols))
		dest := make([]any, 0, len(cols)+5)
		for i := range keys {
			dest = append(dest, &keys[i])
		}
		dest = append(dest, &r.Calls, &r.InputTokens, &r.OutputTokens, &r.CostMicroUSD, &r.UnpricedCalls)
		if err := rows.Scan(dest...); err != nil {
			return nil, err
		}
		k := 0
		for _, g := range order {
			take := func() *string { s := keys[k].String; k++; return &s }
			switch g {
			case GroupWorkflow:
				r.WorkflowID = take()
			case GroupVersion:
				r.VersionID = take()
			case GroupEnvironment:
				r.EnvironmentID = take()
			case GroupModel:
				r.Provider = take()
				r.Model = take()
			case GroupDay:
				r.Day = take()
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
