package store

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/sluicehq/sluice/migrations"
)

// appTableGrants lists the tables whose app-role privileges differ from the
// default (SELECT, INSERT, UPDATE, DELETE).
var appTableGrants = map[string]string{
	"audit_logs":       "SELECT, INSERT", // append-only
	"run_events":       "SELECT, INSERT", // append-only
	"tenants":          "SELECT, UPDATE", // tenants are created by the owner (`sluice tenant`)
	"goose_db_version": "",               // migrations belong to the owner

	// Each variables version is immutable: runs read the set they started with.
	"environment_variable_versions": "SELECT, INSERT",
}

// Migrator applies the embedded migrations as the owner role.
type Migrator struct {
	db       *sql.DB
	provider *goose.Provider
}

// NewMigrator prepares migrations on db, which must be connected as the
// owner of the schema.
func NewMigrator(db *sql.DB) (*Migrator, error) {
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithSessionLocker(locker))
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	return &Migrator{db: db, provider: p}, nil
}

// Up applies every pending migration and, when appURL is set, makes sure the
// app role it names exists with exactly the grants Sluice needs.
func (m *Migrator) Up(ctx context.Context, appURL string, out io.Writer) error {
	res, err := m.provider.Up(ctx)
	for _, r := range res {
		fmt.Fprintf(out, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(1e6))
	}
	if err != nil {
		return fmt.Errorf("migrate up: %w", err)
	}
	if appURL == "" {
		return nil
	}
	return EnsureAppRole(ctx, m.db, appURL)
}

// Down rolls back the latest migration.
func (m *Migrator) Down(ctx context.Context, out io.Writer) error {
	r, err := m.provider.Down(ctx)
	if r != nil {
		fmt.Fprintf(out, "rolled back %s\n", r.Source.Path)
	}
	if err != nil {
		return fmt.Errorf("migrate down: %w", err)
	}
	return nil
}

// Status prints each migration and whether it is applied.
func (m *Migrator) Status(ctx context.Context, out io.Writer) error {
	st, err := m.provider.Status(ctx)
	if err != nil {
		return fmt.Errorf("migrate status: %w", err)
	}
	for _, s := range st {
		at := "pending"
		if !s.AppliedAt.IsZero() {
			at = s.AppliedAt.UTC().Format("2006-01-02 15:04:05Z")
		}
		fmt.Fprintf(out, "%-40s %-8s %s\n", s.Source.Path, s.State, at)
	}
	return nil
}

// Pending reports how many migrations are not applied.
func (m *Migrator) Pending(ctx context.Context) (int, error) {
	st, err := m.provider.Status(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range st {
		if s.State == goose.StatePending {
			n++
		}
	}
	return n, nil
}

// EnsureAppRole creates the role named in appURL when missing (LOGIN,
// NOSUPERUSER, NOBYPASSRLS) and grants it what Sluice needs, nothing more.
func EnsureAppRole(ctx context.Context, db *sql.DB, appURL string) error {
	u, err := url.Parse(appURL)
	if err != nil || u.User == nil || u.User.Username() == "" {
		return fmt.Errorf("DATABASE_APP_URL must name a user")
	}
	role := u.User.Username()
	password, _ := u.User.Password()
	ident := pgx.Identifier{role}.Sanitize()

	var exists bool
	if err := db.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role).Scan(&exists); err != nil {
		return fmt.Errorf("look up app role: %w", err)
	}
	if !exists {
		stmt := "CREATE ROLE " + ident + " LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"
		if password != "" {
			stmt += " PASSWORD " + quoteLiteral(password)
		}
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("create app role: %w", err)
		}
	}
	var super, bypass bool
	if err := db.QueryRowContext(ctx, "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", role).Scan(&super, &bypass); err != nil {
		return err
	}
	if super || bypass {
		return fmt.Errorf("app role %q is superuser or BYPASSRLS; Sluice refuses to run tenants through it", role)
	}
	var dbName string
	if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		return err
	}
	stmts := []string{
		"GRANT CONNECT ON DATABASE " + pgx.Identifier{dbName}.Sanitize() + " TO " + ident,
		"GRANT USAGE ON SCHEMA public TO " + ident,
		"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_evaluating_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_connection_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_scheduling_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_held_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_bulk_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_exporting_tenant_ids() TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_member_roles(character varying, character varying) TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_retention_purge_event_data(character varying, character varying[]) TO " + ident,
		"GRANT EXECUTE ON FUNCTION sluice_retention_purge_audit(character varying, timestamptz, integer) TO " + ident,
	}
	rows, err := db.QueryContext(ctx, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
	if err != nil {
		return err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		tables = append(tables, t)
	}
	rows.Close()
	for _, t := range tables {
		tid := pgx.Identifier{t}.Sanitize()
		stmts = append(stmts, "REVOKE ALL ON "+tid+" FROM "+ident)
		grant, special := appTableGrants[t]
		if !special {
			grant = "SELECT, INSERT, UPDATE, DELETE"
		}
		if grant != "" {
			stmts = append(stmts, "GRANT "+grant+" ON "+tid+" TO "+ident)
		}
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("grant app role: %w", err)
		}
	}
	return nil
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
