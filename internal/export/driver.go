package export

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	entexport "github.com/sluicehq/sluice/ent/export"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/exportspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// The driver is responsible for writing queued exports. Every worker runs
// it; Postgres holds everything it needs. Each pass lists the open
// (QUEUED or RUNNING) exports of every tenant and takes, for each, the
// export's own advisory lock (store.Singleton "export:<id>"): the holder
// writes it, the others skip it. A RUNNING export whose lock is free was
// left by a worker that died (its connection, and the lock, went with it):
// the next pass writes it again from the start, replacing the files. A
// Redis wipe loses nothing, as Redis plays no part. The final update is
// fenced by the attempt number, so a writer that lost its export (purged,
// or taken over) records nothing.

// TenantsExporting lists the tenants with open exports (a SECURITY DEFINER
// function of the migrations, over tenants.open_exports).
const TenantsExporting = "sluice_exporting_tenant_ids"

// lockName is the singleton lock of one export.
func lockName(id string) string { return "export:" + id }

// RunDriver looks for open exports every Interval until ctx ends, writing
// up to maxParallel at once in this process.
func (s *Service) RunDriver(ctx context.Context) {
	for {
		if err := s.Pass(ctx, false); err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "export pass", "err", err)
		}
		t := time.NewTimer(s.o.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Pass starts writing every open export it can lock. With wait it writes
// them before returning (tests); otherwise each is written in a goroutine of
// its own, at most maxParallel at once.
func (s *Service) Pass(ctx context.Context, wait bool) error {
	tenants, err := store.TenantIDsOf(ctx, s.o.Client, TenantsExporting)
	if err != nil {
		return err
	}
	return store.EachTenant(ctx, tenants, func(tid string) error {
		var open []string
		err := store.InTenant(viewer.SystemContext(ctx, tid), s.o.Client, func(ctx context.Context) error {
			var err error
			open, err = ent.FromContext(ctx).Export.Query().
				Where(entexport.StatusIn(entexport.StatusQueued, entexport.StatusRunning)).
				Order(ent.Asc(entexport.FieldCreatedAt)).Limit(100).IDs(ctx)
			return err
		})
		if err != nil {
			return err
		}
		for _, id := range open {
			if wait {
				if _, err := s.Process(ctx, tid, id); err != nil {
					return err
				}
				continue
			}
			select {
			case s.slots <- struct{}{}:
			default:
				return nil // this worker is busy; the next pass, or another worker, goes on
			}
			go func() {
				defer func() { <-s.slots }()
				// Shutdown cancels ctx: the write stops, the export stays
				// RUNNING with its lock released, and the next worker writes it.
				if _, err := s.Process(ctx, tid, id); err != nil && ctx.Err() == nil {
					s.log.WarnContext(ctx, "export", "export", id, "err", err)
				}
			}()
		}
		return nil
	})
}

// Process writes export id if no one else is writing it and it is still
// open. ran is false when another holder had it or it was not open.
func (s *Service) Process(ctx context.Context, tenantID, id string) (ran bool, err error) {
	got, err := store.Singleton(ctx, s.o.DB, lockName(id), func(ctx context.Context) error {
		e, attempt, err := s.begin(ctx, tenantID, id)
		if err != nil || e == nil {
			return err
		}
		ran = true
		s.log.InfoContext(ctx, "export started", "export", id, "tenant", tenantID, "attempt", attempt)
		files, werr := s.write(ctx, e)
		if werr != nil && ctx.Err() != nil {
			return werr // shutting down: left RUNNING, the next worker begins again
		}
		return s.end(ctx, e, attempt, files, werr)
	})
	if err != nil {
		return false, err
	}
	return got && ran, nil
}

// begin marks the export RUNNING with the next attempt number, under its
// row lock, and returns it; nil when it is no longer open.
func (s *Service) begin(ctx context.Context, tenantID, id string) (*ent.Export, int, error) {
	var e *ent.Export
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		cur, err := c.Export.Query().Where(entexport.ID(id)).ForUpdate().Only(ctx)
		if ent.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur.Status != entexport.StatusQueued && cur.Status != entexport.StatusRunning {
			return nil
		}
		now := s.now()
		if !now.Before(cur.ExpiresAt) {
			return nil // the purge ends it
		}
		e, err = cur.Update().SetStatus(entexport.StatusRunning).AddAttempts(1).SetStartedAt(now).SetUpdatedAt(now).Save(ctx)
		return err
	})
	if err != nil || e == nil {
		return nil, 0, err
	}
	return e, e.Attempts, nil
}

// end records the outcome, fenced by the attempt.
func (s *Service) end(ctx context.Context, e *ent.Export, attempt int, files []exportspec.File, werr error) error {
	return store.InTenant(viewer.SystemContext(ctx, e.TenantID), s.o.Client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		now := s.now()
		u := c.Export.Update().Where(entexport.ID(e.ID), entexport.StatusEQ(entexport.StatusRunning), entexport.Attempts(attempt)).
			SetFinishedAt(now).SetUpdatedAt(now)
		action := "export.succeeded"
		meta := map[string]any{"attempt": attempt}
		if werr != nil {
			s.log.ErrorContext(ctx, "export failed", "export", e.ID, "err", werr)
			u.SetStatus(entexport.StatusFailed).SetError(safeError(werr))
			action = "export.failed"
			meta["error"] = safeError(werr)
		} else {
			u.SetStatus(entexport.StatusSucceeded).SetFiles(files)
			counts := map[string]int64{}
			for _, f := range files {
				if f.Kind != KindManifest {
					counts[f.Kind] = f.Count
				}
			}
			meta["counts"] = counts
		}
		n, err := u.Save(ctx)
		if err != nil || n == 0 {
			return err // n == 0: expired or taken over meanwhile
		}
		if err := countOpen(ctx, c, e.TenantID, -1); err != nil {
			return err
		}
		return audit.Record(ctx, c, action, "Export", e.ID, meta)
	})
}

// safeError is what an export's error says: the failing part, without
// connection strings or store credentials (errors carry neither, but the
// message is bounded all the same).
func safeError(err error) string {
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return strings.TrimSpace(msg)
}

// Manifest is the manifest.json of an export.
type Manifest struct {
	ExportID  string            `json:"exportID"`
	TenantID  string            `json:"tenantID"`
	Scope     string            `json:"scope"`
	ScopeID   *string           `json:"scopeID"`
	From      time.Time         `json:"from"`
	To        time.Time         `json:"to"`
	Include   []string          `json:"include"`
	Files     []exportspec.File `json:"files"`
	Counts    map[string]int64  `json:"counts"`
	CreatedAt time.Time         `json:"createdAt"`
	CreatedBy string            `json:"createdBy"`
	WrittenAt time.Time         `json:"writtenAt"`
	Format    string            `json:"format"`
}

func (s *Service) writeManifest(ctx context.Context, e *ent.Export, files []exportspec.File) (exportspec.File, error) {
	m := Manifest{ExportID: e.ID, TenantID: e.TenantID, Scope: string(e.Scope), ScopeID: e.ScopeID, From: e.RangeFrom, To: e.RangeTo,
		Include: e.Include, Files: files, Counts: map[string]int64{}, CreatedAt: e.CreatedAt, CreatedBy: e.CreatedBy,
		WrittenAt: s.now(), Format: "ndjson+gzip; one JSON object per line, the row as stored"}
	for _, f := range files {
		m.Counts[f.Kind] = f.Count
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return exportspec.File{}, err
	}
	sum := sha256Hex(b)
	if err := s.o.Store.Put(ctx, e.ID+"/"+ManifestFile, strings.NewReader(string(b)), int64(len(b))); err != nil {
		return exportspec.File{}, err
	}
	return exportspec.File{Name: ManifestFile, Kind: KindManifest, Bytes: int64(len(b)), SHA256: sum}, nil
}

// keysOf lists every key an export may have written (whatever it
// included, in case an attempt wrote some and failed).
func keysOf(id string) []string {
	keys := []string{id + "/" + ManifestFile}
	for _, k := range kinds {
		keys = append(keys, id+"/"+FileName(k))
	}
	return keys
}

var errNoStore = errors.New("export: no store configured")

// RunPurger deletes expired exports' files every PurgeInterval until ctx
// ends, one worker at a time (store.RunSingleton "export.purge").
func (s *Service) RunPurger(ctx context.Context, db *sql.DB) {
	store.RunSingleton(ctx, db, PurgeName, s.log, func() time.Duration { return s.o.PurgeInterval }, func(ctx context.Context) error {
		_, err := s.Purge(ctx)
		return err
	})
}

// PurgeName is the purge's singleton lock.
const PurgeName = "export.purge"

// Purge deletes the files of every export past its expiry (that no worker
// is writing) and marks it EXPIRED, in batches of 100 per tenant and pass.
// It returns how many exports it purged.
func (s *Service) Purge(ctx context.Context) (int, error) {
	if s.o.Store == nil {
		return 0, errNoStore
	}
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return 0, err
	}
	purged := 0
	err = store.EachTenant(ctx, tenants, func(tid string) error {
		sctx := viewer.SystemContext(ctx, tid)
		var due []*ent.Export
		err := store.InTenant(sctx, s.o.Client, func(ctx context.Context) error {
			var err error
			due, err = ent.FromContext(ctx).Export.Query().
				Where(entexport.PurgedAtIsNil(), entexport.ExpiresAtLTE(s.now())).Limit(100).All(ctx)
			return err
		})
		if err != nil {
			return err
		}
		for _, e := range due {
			// Not while a worker writes it: the lock says who does.
			got, err := store.Singleton(ctx, s.o.DB, lockName(e.ID), func(ctx context.Context) error {
				if err := s.o.Store.Delete(ctx, keysOf(e.ID)...); err != nil {
					return err
				}
				return store.InTenant(sctx, s.o.Client, func(ctx context.Context) error {
					c := ent.FromContext(ctx)
					now := s.now()
					n, err := c.Export.Update().Where(entexport.ID(e.ID), entexport.PurgedAtIsNil()).
						SetStatus(entexport.StatusExpired).SetPurgedAt(now).SetUpdatedAt(now).ClearFiles().Save(ctx)
					if err != nil || n == 0 {
						return err
					}
					if e.Status == entexport.StatusQueued || e.Status == entexport.StatusRunning {
						// Expired before a worker finished it.
						if err := countOpen(ctx, c, tid, -1); err != nil {
							return err
						}
					}
					purged++
					return audit.Record(ctx, c, "export.purge", "Export", e.ID, map[string]any{"expiresAt": e.ExpiresAt})
				})
			})
			if err != nil {
				return fmt.Errorf("export %s: %w", e.ID, err)
			}
			_ = got
		}
		return nil
	})
	return purged, err
}
