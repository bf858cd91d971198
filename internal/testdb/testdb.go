// Package testdb gives a package's tests a Postgres database of their own,
// created from SLUICE_TEST_ADMIN_URL and migrated like `sluice migrate up`
// (with an app role, so RLS applies), and tenants created like
// `sluice tenant create`; the database is dropped when the package run ends.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"testing"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/tenants"
)

// DB is one package run's database.
type DB struct {
	Owner *ent.Client // the owner: provisioning, reads across tenants
	App   *ent.Client // the app role, as Sluice's processes use it (RLS on)
	// AppURL is the app role's connection string.
	AppURL string
}

// AdminURL is SLUICE_TEST_ADMIN_URL, or the local trust superuser.
func AdminURL() string {
	if u := os.Getenv("SLUICE_TEST_ADMIN_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// RandHex returns n random bytes in hex, for unique names.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withDB returns u naming database db and, when user is set, that user
// (password = user).
func withDB(u, db, user string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	p.Path = "/" + db
	if user != "" {
		p.User = url.UserPassword(user, user)
	}
	return p.String(), nil
}

// Main creates a database named sluice_<name>_<random> with the app role
// sluice_app_<name>, stores it in *db, runs the package's tests and drops
// the database. It returns the exit code for os.Exit. The role is
// cluster-wide and kept: each package uses a name of its own.
func Main(m *testing.M, name string, db **DB) int {
	d, drop, err := create(context.Background(), name)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s tests: %v\n", name, err)
		return 1
	}
	defer drop()
	*db = d
	return m.Run()
}

func create(ctx context.Context, name string) (_ *DB, drop func(), err error) {
	admin, err := sql.Open("pgx", AdminURL())
	if err != nil {
		return nil, nil, err
	}
	dbName := "sluice_" + name + "_" + RandHex(4)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+dbName); err != nil {
		admin.Close()
		return nil, nil, fmt.Errorf("create database: %w", err)
	}
	var closers []func()
	drop = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+dbName+" WITH (FORCE)")
		admin.Close()
	}
	defer func() {
		if err != nil {
			drop()
		}
	}()
	ownerURL, err := withDB(AdminURL(), dbName, "")
	if err != nil {
		return nil, nil, err
	}
	appURL, _ := withDB(AdminURL(), dbName, "sluice_app_"+name)
	ownerDB, err := store.Open(ctx, ownerURL, 4)
	if err != nil {
		return nil, nil, fmt.Errorf("open owner: %w", err)
	}
	closers = append(closers, func() { ownerDB.Close() })
	mig, err := store.NewMigrator(ownerDB)
	if err == nil {
		err = mig.Up(ctx, appURL, io.Discard)
		if err != nil {
			// Another package run may have created the (cluster-wide)
			// app role at the same instant: once more finds it.
			err = mig.Up(ctx, appURL, io.Discard)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("migrate: %w", err)
	}
	appDB, err := store.Open(ctx, appURL, 10)
	if err != nil {
		return nil, nil, fmt.Errorf("open app: %w", err)
	}
	closers = append(closers, func() { appDB.Close() })
	return &DB{Owner: store.NewClient(ownerDB), App: store.NewClient(appDB), AppURL: appURL}, drop, nil
}

// Tenant creates a tenant from the default manifest, as `sluice tenant
// create` does, with a random slug, and returns its id.
func (d *DB) Tenant(ctx context.Context, name string) (string, error) {
	m, err := tenants.Default()
	if err != nil {
		return "", err
	}
	m.Slug, m.Name = "t-"+RandHex(6), name
	tn, err := (&tenants.Applier{Client: d.Owner, Keys: secrets.DevKeyRing(), Out: io.Discard}).Apply(ctx, m)
	if err != nil {
		return "", fmt.Errorf("create tenant: %w", err)
	}
	return tn.ID, nil
}
