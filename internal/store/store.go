// Package store opens Sluice's Postgres connections and runs work inside one
// tenant: a transaction that starts with set_config('app.tenant_id', ..., true)
// so Row-Level Security scopes every statement, and an Ent client bound to it.
// Raw pgx SQL runs in the same transaction through Raw, and writes of either
// kind can be held and sent together in one batch (Held, Hold).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	entsql "entgo.io/ent/dialect/sql"

	"entgo.io/ent/dialect"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/sluicehq/sluice/ent"
	_ "github.com/sluicehq/sluice/ent/runtime" // privacy policies and hooks
	"github.com/sluicehq/sluice/internal/tally"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Open connects to Postgres through pgx (counting round trips, see
// internal/tally) and checks the connection.
// maxConns of zero means 20.
func Open(ctx context.Context, url string, maxConns int) (*sql.DB, error) {
	if url == "" {
		return nil, errors.New("store: empty database url")
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	// Every call counts towards the wire cost of its unit of work.
	cfg.Tracer = tally.PGTracer{}
	db := stdlib.OpenDB(*cfg)
	if maxConns <= 0 {
		maxConns = 20
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	db.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("ping database: %w", err)
	}
	return db, nil
}

// NewClient wraps db in an Ent client whose transactions hold deferred
// writes (see Held) and share their connection with raw pgx (see Raw).
// db must use the pgx driver (Open).
func NewClient(db *sql.DB) *ent.Client {
	return ent.NewClient(ent.Driver(Driver{entsql.OpenDB(dialect.Postgres, db)}))
}

// BeginTenant starts a transaction scoped to tenantID. The setting is
// transaction-local (the third argument of set_config), so it can never leak
// to another request through the pool.
//
// The same statement asks for custom plans (plan_cache_mode), also
// transaction-local. Statements are prepared once per connection; after a
// few executions Postgres may keep a generic plan made when a table was
// small (a new installation, a new database) and, until an ANALYZE, go on
// scanning the table as it grows: measured on a fresh database, a step's
// held writes took 2.6 ms instead of 0.3 in about half of the benchmark
// runs. A custom plan costs a few tens of microseconds of planning and
// always sees the table's current size.
//
// For a client of NewClient, nothing is sent yet: BEGIN and the settings
// go with the transaction's first statement, in the same round trip when
// it is a raw one (Raw), and a transaction that sends nothing costs none.
func BeginTenant(ctx context.Context, client *ent.Client, tenantID string) (*ent.Tx, error) {
	if tenantID == "" {
		return nil, errors.New("store: begin tenant transaction without a tenant")
	}
	tx, err := client.Tx(context.WithValue(ctx, beginTenantKey{}, tenantID))
	if err != nil {
		return nil, fmt.Errorf("begin: %w", err)
	}
	if bt, err := txOf(ctx, tx); err == nil && bt.tenant == tenantID {
		return tx, nil // held with BEGIN
	}
	// Another driver: a statement of its own.
	if _, err := tx.ExecContext(ctx, "SELECT set_config('app.tenant_id', $1, true), set_config('plan_cache_mode', 'force_custom_plan', true)", tenantID); err != nil {
		_ = tx.Rollback()
		return nil, fmt.Errorf("set tenant: %w", err)
	}
	return tx, nil
}

// InTenant runs fn in one transaction scoped to the viewer's tenant in ctx,
// with the transaction's client in fn's context. fn's error rolls back.
func InTenant(ctx context.Context, client *ent.Client, fn func(ctx context.Context) error) error {
	v := viewer.FromContext(ctx)
	if v == nil || v.TenantID == "" {
		return errors.New("store: no tenant in context")
	}
	tx, err := BeginTenant(ctx, client, v.TenantID)
	if err != nil {
		return err
	}
	txCtx := ent.NewContext(ent.NewTxContext(ctx, tx), tx.Client())
	defer func() {
		// A panic in fn ends the transaction too, so that its connection
		// goes back to the pool, and goes on.
		if r := recover(); r != nil {
			_ = tx.Rollback()
			panic(r)
		}
	}()
	if err := fn(txCtx); err != nil {
		if rbErr := tx.Rollback(); rbErr != nil {
			return errors.Join(err, fmt.Errorf("rollback: %w", rbErr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Client returns the tenant-scoped Ent client bound to ctx. Code that serves a
// tenant must use it and never a pool-wide client, so RLS always applies.
func Client(ctx context.Context) (*ent.Client, error) {
	c := ent.FromContext(ctx)
	if c == nil {
		return nil, errors.New("store: no tenant transaction in context")
	}
	return c, nil
}

// TenantIDs lists every tenant id through sluice_tenant_ids(), a SECURITY
// DEFINER function owned by the schema owner: the app role cannot read the
// tenants registry, but the reconciler must visit every tenant.
func TenantIDs(ctx context.Context, client *ent.Client) ([]string, error) {
	return TenantIDsOf(ctx, client, TenantsAll)
}

// Tenant lists: SECURITY DEFINER functions (migrations) that give the app
// role the ids of the tenants a singleton job must visit, so that a pass
// costs nothing for tenants with nothing to do.
const (
	TenantsAll        = "sluice_tenant_ids"            // every tenant
	TenantsEvaluating = "sluice_evaluating_tenant_ids" // open evaluations
	TenantsConnecting = "sluice_connection_tenant_ids" // connections due or steps waiting for one
	TenantsScheduling = "sluice_scheduling_tenant_ids" // schedules
	TenantsHolding    = "sluice_held_tenant_ids"       // held steps (fair dispatch)
	TenantsBulk       = "sluice_bulk_tenant_ids"       // open bulk operations
)

// EachTenant calls fn for each tenant in turn, until ctx ends: a singleton
// job's pass over the tenants TenantIDsOf listed. A tenant whose fn fails
// does not hold the others back; the errors are joined, each naming its
// tenant.
func EachTenant(ctx context.Context, tenants []string, fn func(tenantID string) error) error {
	var all []error
	for _, tid := range tenants {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(tid); err != nil {
			all = append(all, fmt.Errorf("tenant %s: %w", tid, err))
		}
	}
	return errors.Join(all...)
}

// TenantIDsOf lists the tenant ids the function list (one of the Tenants
// constants) returns.
func TenantIDsOf(ctx context.Context, client *ent.Client, list string) ([]string, error) {
	rows, err := client.QueryContext(ctx, "SELECT id FROM "+list+"() AS t(id)")
	if err != nil {
		return nil, fmt.Errorf("list tenants (%s): %w", list, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
