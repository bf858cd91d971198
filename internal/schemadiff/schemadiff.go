// Package schemadiff writes the migration that brings the migrations folder
// up to the Ent schema, and checks that none is needed. It replays the folder
// on a scratch database, so it needs a role that may create databases.
package schemadiff

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"ariga.io/atlas/sql/sqltool"
	"entgo.io/ent/dialect"
	entsql "entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/schema"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/sluicehq/sluice/ent/migrate"
)

// Write diffs the Ent schema against the migrations in dir and writes any
// difference as a new goose migration called name. It reports whether a
// file was written.
func Write(ctx context.Context, adminURL, dir, name string) (bool, error) {
	before, err := os.ReadDir(dir)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", dir, err)
	}
	scratch, drop, err := scratchDatabase(ctx, adminURL)
	if err != nil {
		return false, err
	}
	defer drop()

	db, err := sql.Open("pgx", scratch)
	if err != nil {
		return false, err
	}
	defer db.Close()
	gooseDir, err := sqltool.NewGooseDir(dir)
	if err != nil {
		return false, fmt.Errorf("open migration dir: %w", err)
	}
	m, err := schema.NewMigrate(entsql.OpenDB(dialect.Postgres, db),
		schema.WithDir(gooseDir),
		schema.WithMigrationMode(schema.ModeReplay),
		schema.WithDialect(dialect.Postgres),
		schema.WithFormatter(sqltool.GooseFormatter),
		schema.WithDropColumn(true),
		schema.WithDropIndex(true),
	)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	if err := m.NamedDiff(ctx, name, migrate.Tables...); err != nil {
		return false, fmt.Errorf("diff: %w", err)
	}
	after, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	return len(after) != len(before), nil
}

// Check reports the migration that would be written, or "" when the
// migrations in dir already match the Ent schema. dir is not modified.
func Check(ctx context.Context, adminURL, dir string) (string, error) {
	tmp, err := os.MkdirTemp("", "sluice-schemadiff-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	names := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() || (filepath.Ext(e.Name()) != ".sql" && e.Name() != "atlas.sum") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(tmp, e.Name()), b, 0o644); err != nil {
			return "", err
		}
		names[e.Name()] = true
	}
	wrote, err := Write(ctx, adminURL, tmp, "pending")
	if err != nil || !wrote {
		return "", err
	}
	out, _ := os.ReadDir(tmp)
	for _, e := range out {
		if !names[e.Name()] && filepath.Ext(e.Name()) == ".sql" {
			b, _ := os.ReadFile(filepath.Join(tmp, e.Name()))
			return string(b), nil
		}
	}
	return "(a migration was written)", nil
}

// scratchDatabase creates an empty database next to adminURL's and returns
// its URL and a function that drops it.
func scratchDatabase(ctx context.Context, adminURL string) (string, func(), error) {
	admin, err := sql.Open("pgx", adminURL)
	if err != nil {
		return "", nil, err
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sluice_schemadiff_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create scratch database: %w", err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		admin.Close()
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		_, _ = admin.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close()
	}
	return u.String(), drop, nil
}
