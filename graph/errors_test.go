package graph

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/internal/errs"
)

// TestClassifyConstraintKinds: a constraint violation is classified by its
// SQLSTATE, however deeply it is wrapped: only a unique violation is a
// CONFLICT; a foreign key names the missing reference.
func TestClassifyConstraintKinds(t *testing.T) {
	for _, tc := range []struct {
		state, constraint string
		want              errs.Code
	}{
		{"23505", "workflows_tenant_id_slug_key", errs.Conflict},
		{"23503", "workflows_tenants_workflows", errs.NotFound},
		{"23514", "runs_status_check", errs.Validation},
		{"23502", "", errs.Validation},
	} {
		pg := &pgconn.PgError{Code: tc.state, ConstraintName: tc.constraint, TableName: "workflows", ColumnName: "name", Message: "violation"}
		err := fmt.Errorf("create workflow: %w", fmt.Errorf("sql: %w", pg))
		code, msg, _ := classify(err)
		if code != tc.want {
			t.Errorf("SQLSTATE %s: got %s (%q), want %s", tc.state, code, msg, tc.want)
		}
		if code == errs.Conflict && msg == "" {
			t.Errorf("SQLSTATE %s: no message", tc.state)
		}
	}
}
