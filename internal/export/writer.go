package export

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/sluicehq/sluice/ent"
	entexport "github.com/sluicehq/sluice/ent/export"
	"github.com/sluicehq/sluice/internal/exportspec"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// file is one NDJSON file being written: lines go through gzip into a
// scratch file, and the SHA-256 and size are of the gzipped bytes, as
// stored.
type file struct {
	kind  string
	f     *os.File
	sum   hash.Hash
	size  int64
	gz    *gzip.Writer
	count int64
}

func (w *file) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	w.sum.Write(p[:n])
	w.size += int64(n)
	return n, err
}

func (s *Service) newFile(kind string) (*file, error) {
	f, err := os.CreateTemp(s.o.ScratchDir, "sluice-export-*")
	if err != nil {
		return nil, fmt.Errorf("scratch file: %w", err)
	}
	w := &file{kind: kind, f: f, sum: sha256.New()}
	w.gz = gzip.NewWriter(w)
	return w, nil
}

// line writes one JSON document (as Postgres rendered it) and a newline.
func (w *file) line(doc []byte) error {
	w.count++
	if _, err := w.gz.Write(doc); err != nil {
		return err
	}
	_, err := w.gz.Write([]byte{'\n'})
	return err
}

func (w *file) discard() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// finish closes the gzip stream, uploads the file and describes it.
func (s *Service) finish(ctx context.Context, exportID string, w *file) (exportspec.File, error) {
	defer w.discard()
	if err := w.gz.Close(); err != nil {
		return exportspec.File{}, err
	}
	if _, err := w.f.Seek(0, io.SeekStart); err != nil {
		return exportspec.File{}, err
	}
	name := FileName(w.kind)
	if err := s.o.Store.Put(ctx, exportID+"/"+name, w.f, w.size); err != nil {
		return exportspec.File{}, err
	}
	return exportspec.File{Name: name, Kind: w.kind, Count: w.count, Bytes: w.size, SHA256: hex.EncodeToString(w.sum.Sum(nil))}, nil
}

// scopeFilter is the SQL condition on a runs row r for the export's scope,
// with the scope id as the placeholder $n.
func scopeFilter(e *ent.Export, n int) (string, []any) {
	switch e.Scope {
	case entexport.ScopeEnvironment:
		return fmt.Sprintf(" AND r.environment_id = $%d", n), []any{*e.ScopeID}
	case entexport.ScopeWorkflow:
		return fmt.Sprintf(" AND r.workflow_id = $%d", n), []any{*e.ScopeID}
	}
	return "", nil
}

// idBound is the smallest id of prefix created at t: ids are prefixed
// ULIDs, whose text sorts by creation time, so the runs of a time range
// are a range of the primary key (read with a minute of slack each side;
// created_at decides).
func idBound(prefix string, t time.Time) string {
	var u ulid.ULID
	_ = u.SetTime(ulid.Timestamp(t))
	return prefix + "_" + strings.ToLower(u.String())
}

// child is a table read for each page of runs, in keyset order.
type child struct {
	kind, table, key, cast string
}

var children = []child{
	{KindEvents, "run_events", "seq", "::bigint"},
	{KindSteps, "step_runs", "step_id", ""},
	{KindCost, "model_calls", "id", ""},
}

// write writes the files of e and returns their descriptions, manifest
// last. Each page is read in a tenant transaction of its own.
func (s *Service) write(ctx context.Context, e *ent.Export) ([]exportspec.File, error) {
	files := map[string]*file{}
	defer func() {
		for _, w := range files {
			w.discard()
		}
	}()
	for _, k := range e.Include {
		w, err := s.newFile(k)
		if err != nil {
			return nil, err
		}
		files[k] = w
	}
	sctx := viewer.SystemContext(ctx, e.TenantID)
	if files[KindRuns] != nil || files[KindEvents] != nil || files[KindSteps] != nil || files[KindCost] != nil {
		if err := s.writeRuns(sctx, e, files); err != nil {
			return nil, err
		}
	}
	if w := files[KindAudit]; w != nil {
		if err := s.writeAudit(sctx, e, w); err != nil {
			return nil, err
		}
	}
	var out []exportspec.File
	for _, k := range e.Include {
		f, err := s.finish(ctx, e.ID, files[k])
		delete(files, k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out = append(out, f)
	}
	m, err := s.writeManifest(ctx, e, out)
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(out, m), nil
}

func (s *Service) writeRuns(ctx context.Context, e *ent.Export, files map[string]*file) error {
	scope, scopeArgs := scopeFilter(e, 6)
	q := `SELECT r.id, to_jsonb(r)::text FROM runs r WHERE r.tenant_id = $1 AND r.id > $2 AND r.id < $3
		AND r.created_at >= $4 AND r.created_at < $5` + scope + ` ORDER BY r.id LIMIT ` + fmt.Sprint(s.o.PageSize)
	after := idBound(ids.Run, e.RangeFrom.Add(-time.Minute))
	upper := idBound(ids.Run, e.RangeTo.Add(time.Minute))
	for {
		var page []string
		err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
			db, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			rows, err := db.Query(ctx, q, append([]any{e.TenantID, after, upper, e.RangeFrom, e.RangeTo}, scopeArgs...)...)
			if err != nil {
				return err
			}
			for rows.Next() {
				var id string
				var doc []byte
				if err := rows.Scan(&id, &doc); err != nil {
					rows.Close()
					return err
				}
				page = append(page, id)
				if w := files[KindRuns]; w != nil {
					if err := w.line(doc); err != nil {
						rows.Close()
						return err
					}
				}
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, ch := range children {
				if w := files[ch.kind]; w != nil && len(page) > 0 {
					if err := s.writeChildren(ctx, db, e.TenantID, ch, page, w); err != nil {
						return fmt.Errorf("%s: %w", ch.kind, err)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(page) < s.o.PageSize {
			return nil
		}
		after = page[len(page)-1]
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// writeChildren writes the rows of ch that belong to the runs of one page,
// in pages of their own ordered by (run_id, key).
func (s *Service) writeChildren(ctx context.Context, db store.Querier, tenantID string, ch child, runIDs []string, w *file) error {
	limit := s.o.PageSize * 4
	q := fmt.Sprintf(`SELECT c.run_id, c.%[2]s::text, to_jsonb(c)::text FROM %[1]s c WHERE c.tenant_id = $1 AND c.run_id = ANY($2)
		AND (c.run_id, c.%[2]s) > ($3, $4%[3]s) ORDER BY c.run_id, c.%[2]s LIMIT %[4]d`, ch.table, ch.key, ch.cast, limit)
	afterRun, afterKey := "", ""
	if ch.cast != "" {
		afterKey = "-1"
	}
	for {
		rows, err := db.Query(ctx, q, tenantID, runIDs, afterRun, afterKey)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			var doc []byte
			if err := rows.Scan(&afterRun, &afterKey, &doc); err != nil {
				rows.Close()
				return err
			}
			n++
			if err := w.line(doc); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if n < limit {
			return nil
		}
	}
}

func (s *Service) writeAudit(ctx context.Context, e *ent.Export, w *file) error {
	scope := ""
	var scopeArgs []any
	switch e.Scope {
	case entexport.ScopeEnvironment, entexport.ScopeWorkflow:
		col := "environment_id"
		if e.Scope == entexport.ScopeWorkflow {
			col = "workflow_id"
		}
		// Entries about the scope's object itself and about its runs.
		scope = ` AND (a.target_id = $6 OR a.target_id IN (SELECT r.id FROM runs r WHERE r.tenant_id = $1 AND r.` + col + ` = $6))`
		scopeArgs = []any{*e.ScopeID}
	}
	q := `SELECT a.created_at, a.id, to_jsonb(a)::text FROM audit_logs a WHERE a.tenant_id = $1
		AND a.created_at >= $2 AND a.created_at < $3 AND (a.created_at, a.id) > ($4, $5)` + scope +
		` ORDER BY a.created_at, a.id LIMIT ` + fmt.Sprint(s.o.PageSize)
	afterAt, afterID := e.RangeFrom.Add(-time.Microsecond), ""
	for {
		n := 0
		err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
			db, err := store.Raw(ctx)
			if err != nil {
				return err
			}
			rows, err := db.Query(ctx, q, append([]any{e.TenantID, e.RangeFrom, e.RangeTo, afterAt, afterID}, scopeArgs...)...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var doc []byte
				if err := rows.Scan(&afterAt, &afterID, &doc); err != nil {
					return err
				}
				n++
				if err := w.line(doc); err != nil {
					return err
				}
			}
			return rows.Err()
		})
		if err != nil {
			return err
		}
		if n < s.o.PageSize {
			return nil
		}
	}
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
