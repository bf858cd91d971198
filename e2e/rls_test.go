package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

// rlsKnownTenantTables are tables that must be found by the catalog query
// below; the test checks every table with a tenant_id column, these are only
// the floor that proves the query finds something.
var rlsKnownTenantTables = []string{
	"members", "api_keys", "environments", "workflows", "workflow_versions",
	"deployments", "credentials", "credential_versions", "audit_logs",
}

// rlsTenantTables lists the tables of schema public with a tenant_id column,
// read from the catalog as the owner.
func rlsTenantTables(t *testing.T, owner *sql.DB) []string {
	t.Helper()
	rows, err := owner.Query(`
		SELECT c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
		ORDER BY c.relname`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range rlsKnownTenantTables {
		if !slices.Contains(tables, k) {
			t.Fatalf("tenant table %s not found in the catalog (found %v)", k, tables)
		}
	}
	return tables
}

// TestRLSCatalog checks the database's own description of isolation: FORCE
// RLS and a tenant policy on every tenant table, and an app role that can
// bypass none of it.
func TestRLSCatalog(t *testing.T) {
	t.Parallel()
	owner := ownerDB(t)
	for _, table := range rlsTenantTables(t, owner) {
		var enabled, forced bool
		if err := owner.QueryRow(`SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = ('public.' || quote_ident($1))::regclass`, table).Scan(&enabled, &forced); err != nil {
			t.Fatal(err)
		}
		if !enabled || !forced {
			t.Errorf("%s: row level security enabled=%v forced=%v, want both", table, enabled, forced)
		}
		rows, err := owner.Query(`SELECT policyname, permissive, cmd, coalesce(qual, ''), coalesce(with_check, '') FROM pg_policies WHERE schemaname = 'public' AND tablename = $1`, table)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var name, permissive, cmd, qual, check string
			if err := rows.Scan(&name, &permissive, &cmd, &qual, &check); err != nil {
				t.Fatal(err)
			}
			n++
			// Permissive policies are OR-ed: one that does not test the
			// tenant would open the table.
			if permissive == "PERMISSIVE" && (qual != "" && !strings.Contains(qual, "app.tenant_id") || check != "" && !strings.Contains(check, "app.tenant_id") || qual == "" && check == "") {
				t.Errorf("%s: policy %s (%s) does not test app.tenant_id: USING (%s) WITH CHECK (%s)", table, name, cmd, qual, check)
			}
		}
		rows.Close()
		if n == 0 {
			t.Errorf("%s: no policy", table)
		}
	}

	var super, bypass bool
	if err := owner.QueryRow(`SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, appRole).Scan(&super, &bypass); err != nil {
		t.Fatalf("app role %s: %v", appRole, err)
	}
	if super || bypass {
		t.Errorf("app role %s: superuser=%v bypassrls=%v", appRole, super, bypass)
	}
	// Owning a table, directly or through a role it belongs to, would let
	// the app role turn RLS off.
	var owned []string
	rows, err := owner.Query(`
		SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') AND pg_has_role($1, c.relowner, 'USAGE')`, appRole)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		owned = append(owned, name)
	}
	rows.Close()
	if len(owned) > 0 {
		t.Errorf("app role %s owns %v", appRole, owned)
	}

	app := appDB(t)
	// Turning RLS off is refused rather than silently obeyed.
	err = rlsOwnerTx(context.Background(), app, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`SET LOCAL row_security = off`); err != nil {
			return err
		}
		var n int
		return tx.QueryRow(`SELECT count(*) FROM workflows`).Scan(&n)
	})
	if err == nil || !strings.Contains(err.Error(), "row-level security") {
		t.Errorf("app role with row_security off: want an RLS error, got %v", err)
	}
	if _, err := app.Exec(`ALTER TABLE workflows NO FORCE ROW LEVEL SECURITY`); rlsCode(err) != "42501" {
		t.Errorf("app role altered RLS on workflows: %v", err)
	}
}

// TestRLSRows checks what the app role actually reads: nothing without a
// tenant, only that tenant's rows with one, and never a write across.
func TestRLSRows(t *testing.T) {
	t.Parallel()
	a, b := newFixture(t, "rls-a"), newFixture(t, "rls-b")
	isoAddMember(t, a, "rls-member-"+randHex(3)+"@e2e.test")
	isoAddMember(t, b, "rls-member-"+randHex(3)+"@e2e.test")
	owner, app := ownerDB(t), appDB(t)
	tables := rlsTenantTables(t, owner)
	ctx := context.Background()

	ownerCount := map[string]map[string]int{}
	for _, f := range []*fixture{a, b} {
		ownerCount[f.tenantID] = map[string]int{}
		for _, table := range tables {
			var n int
			if err := owner.QueryRow(`SELECT count(*) FROM `+rlsIdent(table)+` WHERE tenant_id = $1`, f.tenantID).Scan(&n); err != nil {
				t.Fatal(err)
			}
			ownerCount[f.tenantID][table] = n
		}
	}

	t.Run("no tenant sees nothing", func(t *testing.T) {
		for _, table := range tables {
			if slices.Contains(rlsKnownTenantTables, table) && ownerCount[a.tenantID][table] == 0 {
				t.Fatalf("control: the owner sees no %s rows of tenant A", table)
			}
			var n int
			if err := app.QueryRow(`SELECT count(*) FROM ` + rlsIdent(table)).Scan(&n); err != nil {
				t.Fatalf("%s: %v", table, err)
			}
			if n != 0 {
				t.Errorf("%s: the app role with no tenant sees %d rows", table, n)
			}
		}
		var n int
		if err := app.QueryRow(`SELECT count(*) FROM tenants`).Scan(&n); err != nil || n != 0 {
			t.Errorf("tenants: the app role with no tenant sees %d rows (%v)", n, err)
		}
	})

	t.Run("a tenant sees only its rows", func(t *testing.T) {
		for _, f := range []*fixture{a, b} {
			for _, table := range tables {
				var mine, others int
				err := rlsInTenant(ctx, app, f.tenantID, func(tx *sql.Tx) error {
					return tx.QueryRow(`SELECT count(*) FILTER (WHERE tenant_id = $1), count(*) FILTER (WHERE tenant_id <> $1) FROM `+rlsIdent(table), f.tenantID).Scan(&mine, &others)
				})
				if err != nil {
					t.Fatalf("%s: %v", table, err)
				}
				if mine != ownerCount[f.tenantID][table] || others != 0 {
					t.Errorf("%s as %s: sees %d own rows (owner counts %d) and %d of other tenants", table, f.tenantID, mine, ownerCount[f.tenantID][table], others)
				}
			}
			var ids []string
			err := rlsInTenant(ctx, app, f.tenantID, func(tx *sql.Tx) error {
				rows, err := tx.Query(`SELECT id FROM tenants`)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var id string
					if err := rows.Scan(&id); err != nil {
						return err
					}
					ids = append(ids, id)
				}
				return rows.Err()
			})
			if err != nil || len(ids) != 1 || ids[0] != f.tenantID {
				t.Errorf("tenants as %s: %v (%v)", f.tenantID, ids, err)
			}
		}
	})

	t.Run("no writes across tenants", func(t *testing.T) {
		// WITH CHECK refuses rows naming another tenant.
		err := rlsInTenant(ctx, app, a.tenantID, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO workflows (id, created_at, updated_at, name, slug, created_by, tenant_id) VALUES ('wf_01jzzzzzzzzzzzzzzzzzzzzzzz', now(), now(), 'x', 'planted', 'x', $1)`, b.tenantID)
			return err
		})
		if rlsCode(err) != "42501" {
			t.Errorf("insert into B as A: want an RLS violation, got %v", err)
		}
		err = rlsInTenant(ctx, app, a.tenantID, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE workflows SET tenant_id = $1 WHERE id = $2`, b.tenantID, a.workflowID)
			return err
		})
		if rlsCode(err) != "42501" {
			t.Errorf("move A's workflow to B: want an RLS violation, got %v", err)
		}
		for _, stmt := range []string{
			`UPDATE workflows SET name = 'taken' WHERE tenant_id = $1`,
			`DELETE FROM credentials WHERE tenant_id = $1`,
		} {
			var affected int64
			err := rlsInTenant(ctx, app, a.tenantID, func(tx *sql.Tx) error {
				res, err := tx.Exec(stmt, b.tenantID)
				if err != nil {
					return err
				}
				affected, err = res.RowsAffected()
				return err
			})
			if err != nil || affected != 0 {
				t.Errorf("%s as A on B: %d rows, %v", stmt, affected, err)
			}
		}
	})

	t.Run("audit log is append-only", func(t *testing.T) {
		for _, stmt := range []string{
			`UPDATE audit_logs SET action = 'forged' WHERE id = $1`,
			`DELETE FROM audit_logs WHERE id = $1`,
		} {
			err := rlsInTenant(ctx, app, a.tenantID, func(tx *sql.Tx) error {
				_, err := tx.Exec(stmt, a.auditLogID)
				return err
			})
			if rlsCode(err) != "42501" || !strings.Contains(err.Error(), "permission denied") {
				t.Errorf("app role: %s: want permission denied, got %v", stmt, err)
			}
			err = rlsOwnerTx(ctx, owner, func(tx *sql.Tx) error {
				_, err := tx.Exec(stmt, a.auditLogID)
				return err
			})
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("owner: %s: want the append-only trigger, got %v", stmt, err)
			}
		}
	})

	t.Run("published versions are immutable", func(t *testing.T) {
		update := `UPDATE workflow_versions SET definition = definition WHERE id = $1`
		// Control: a draft can be updated (rolled back).
		if err := rlsOwnerTx(ctx, owner, func(tx *sql.Tx) error { return rlsExecOne(tx, update, a.draftID) }); err != nil {
			t.Fatalf("control: update a draft as the owner: %v", err)
		}
		for _, stmt := range []string{update, `DELETE FROM workflow_versions WHERE id = $1`} {
			err := rlsOwnerTx(ctx, owner, func(tx *sql.Tx) error { return rlsExecOne(tx, stmt, a.versionID) })
			if err == nil || !strings.Contains(err.Error(), "immutable") {
				t.Errorf("owner: %s on a published version: want the immutability trigger, got %v", stmt, err)
			}
		}
	})
}

// rlsInTenant runs fn as the app role in a transaction scoped to tenantID,
// the way Sluice does, and rolls it back.
func rlsInTenant(ctx context.Context, db *sql.DB, tenantID string, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.Exec(`SELECT set_config('app.tenant_id', $1, true)`, tenantID); err != nil {
		return err
	}
	return fn(tx)
}

// rlsOwnerTx runs fn in a transaction on db (the owner's, mostly) and rolls
// back, so a missing trigger cannot damage the suite's data.
func rlsOwnerTx(ctx context.Context, db *sql.DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	return fn(tx)
}

// rlsExecOne runs stmt and requires it to touch exactly one row.
func rlsExecOne(tx *sql.Tx, stmt string, args ...any) error {
	res, err := tx.Exec(stmt, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("statement touched %d rows, want 1", n)
	}
	return nil
}

// rlsCode is the SQLSTATE of err, or "".
func rlsCode(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

func rlsIdent(name string) string { return `"` + strings.ReplaceAll(name, `"`, `""`) + `"` }
