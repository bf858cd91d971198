package export

// The driver tests run the export service on a real Postgres
// (internal/testdb) on the app role's pool (RLS on), with the local store
// in a temporary directory and an injected clock.

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	entexport "github.com/sluicehq/sluice/ent/export"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/viewer"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "exporttest", &testDB))
}

type h struct {
	t      *testing.T
	s      *Service
	dir    string
	clock  *testdb.Clock
	client *ent.Client
	tenant string
	admin  context.Context
}

func newH(t *testing.T) *h {
	t.Helper()
	ctx := context.Background()
	tid, err := testDB.Tenant(ctx, "export test")
	if err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(ctx, testDB.AppURL, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	x := &h{t: t, dir: t.TempDir(), clock: testdb.NewClock(time.Now()), client: store.NewClient(db), tenant: tid}
	x.s = New(Options{Client: x.client, DB: db, Store: LocalStore{Dir: x.dir}, URLSecret: []byte("a test secret of thirty-two bytes"),
		Now: x.clock.Now, ScratchDir: t.TempDir(), PageSize: 2})
	x.admin = viewer.NewContext(ctx, &viewer.Viewer{TenantID: tid, Subject: "admin@export.test", Roles: []string{viewer.RoleAdmin}})
	return x
}

// in runs fn in a tenant transaction as the admin.
func (x *h) in(fn func(ctx context.Context) error) error {
	return store.InTenant(x.admin, x.client, fn)
}

func (x *h) get(id string) *ent.Export {
	x.t.Helper()
	var e *ent.Export
	if err := x.in(func(ctx context.Context) error {
		var err error
		e, err = ent.FromContext(ctx).Export.Get(ctx, id)
		return err
	}); err != nil {
		x.t.Fatal(err)
	}
	return e
}

func (x *h) openExports() int {
	x.t.Helper()
	tn, err := testDB.Owner.Tenant.Query().Where(tenant.ID(x.tenant)).Only(viewer.SystemContext(context.Background(), x.tenant))
	if err != nil {
		x.t.Fatal(err)
	}
	return tn.OpenExports
}

// TestDriverTakesOverAbandonedExport: while another process holds an
// export's lock, a pass leaves it alone; a worker that marked it RUNNING
// and died (its lock gone with its connection) leaves it to the next pass,
// which writes it again from the start (attempt 2). Past its TTL the purge
// deletes its files, it is EXPIRED and mints no URL.
func TestDriverTakesOverAbandonedExport(t *testing.T) {
	x := newH(t)
	var e *ent.Export
	if err := x.in(func(ctx context.Context) error {
		var err error
		e, err = x.s.Create(ctx, Input{Scope: entexport.ScopeTenant, From: x.clock.Now().Add(-time.Hour), To: x.clock.Now().Add(time.Hour),
			Include: []string{KindAudit, KindRuns}})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n := x.openExports(); n != 1 {
		t.Fatalf("open exports %d after create, want 1", n)
	}
	// Another "process" (a pool of its own) holds the export's lock and
	// begins it, then dies.
	other, err := store.Open(context.Background(), testDB.AppURL, 2)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := store.Singleton(context.Background(), other, lockName(e.ID), func(ctx context.Context) error {
			if _, _, err := x.s.begin(ctx, x.tenant, e.ID); err != nil {
				return err
			}
			close(held)
			<-release
			return nil
		})
		done <- err
	}()
	<-held
	ran, err := x.s.Process(context.Background(), x.tenant, e.ID)
	if err != nil || ran {
		t.Fatalf("process while another holds the lock: ran %v, err %v", ran, err)
	}
	if got := x.get(e.ID); got.Status != entexport.StatusRunning || got.Attempts != 1 {
		t.Fatalf("while held: %s attempt %d, want RUNNING 1", got.Status, got.Attempts)
	}
	// The holder dies: its connection closes and the lock with it.
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := x.s.Pass(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	got := x.get(e.ID)
	if got.Status != entexport.StatusSucceeded || got.Attempts != 2 || len(got.Files) != 3 {
		t.Fatalf("after the pass: %s attempt %d files %v, want SUCCEEDED, 2, three files", got.Status, got.Attempts, got.Files)
	}
	if n := x.openExports(); n != 0 {
		t.Fatalf("open exports %d after success, want 0", n)
	}
	// The audit file holds the create entry; files are in the store.
	f, err := os.Open(filepath.Join(x.dir, e.ID, "audit.ndjson.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(zr)
	var actions []string
	for sc.Scan() {
		var row struct {
			Action   string `json:"action"`
			TargetID string `json:"target_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatalf("audit line: %v: %s", err, sc.Text())
		}
		if row.Action == "export.create" && row.TargetID != e.ID {
			t.Fatalf("audit line of another export: %s", sc.Text())
		}
		actions = append(actions, row.Action)
	}
	f.Close()
	if len(actions) == 0 || actions[0] != "export.create" {
		t.Fatalf("audit lines %v, want the export's create first", actions)
	}
	if err := x.in(func(ctx context.Context) error {
		_, _, err := x.s.DownloadURL(ctx, e.ID, "audit.ndjson.gz", nil)
		return err
	}); err != nil {
		t.Fatalf("download URL before expiry: %v", err)
	}
	// A second pass does nothing more.
	if ran, err := x.s.Process(context.Background(), x.tenant, e.ID); err != nil || ran {
		t.Fatalf("process of a finished export: ran %v, err %v", ran, err)
	}

	x.clock.Advance(7*24*time.Hour + time.Second)
	n, err := x.s.Purge(context.Background())
	if err != nil || n < 1 {
		t.Fatalf("purge: %d, %v", n, err)
	}
	if got := x.get(e.ID); got.Status != entexport.StatusExpired || got.PurgedAt == nil || len(got.Files) != 0 {
		t.Fatalf("after purge: %s %v %v", got.Status, got.PurgedAt, got.Files)
	}
	if _, err := os.Stat(filepath.Join(x.dir, e.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("files of a purged export remain: %v", err)
	}
	err = x.in(func(ctx context.Context) error {
		_, _, err := x.s.DownloadURL(ctx, e.ID, "audit.ndjson.gz", nil)
		return err
	})
	if errs.CodeOf(err) != errs.Conflict {
		t.Fatalf("download URL of an expired export: %v, want CONFLICT", err)
	}
}
