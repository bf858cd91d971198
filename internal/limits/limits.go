// Package limits owns a tenant's named concurrency limits: the
// concurrency_limits rows (tenant data under RLS), setConcurrencyLimit and
// deleteConcurrencyLimit with their audit entries, the list with what runs
// under each limit and what waits for it, and the manifest's `limits:`
// block (Apply).
//
// A step names a limit with `limit: "crm-api"` (http and llm steps); the
// run state machine enforces it at the step's claim
// (internal/runs/limits.go): at most the limit's steps run at once across
// every workflow and environment of the tenant, the others are held in
// Postgres and released as running ones leave. Versions that name an
// unknown limit are refused at create, publish and deploy
// (internal/control/limitrefs.go). Deleting a limit that steps still name
// is allowed: those steps then run unlimited, and the steps held for it
// are released at once.
package limits

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/concurrencylimit"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// MaxLimit is the largest limit a named limit may have.
const MaxLimit = 10000

// nameRE is what a limit's name may be (the definition format's pattern).
var nameRE = regexp.MustCompile(`^[a-z0-9._-]{1,63}$`)

// ValidName reports whether name may name a limit: lower-case letters,
// digits, '-', '_' and '.', 1 to 63 characters.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// NameRule is what ValidName asks of a name, as error messages say it.
const NameRule = "must be 1 to 63 lower-case letters, digits, '-', '_' or '.'"

// Releaser releases, in the caller's transaction, the steps held for a
// limit that fit under it now, and sends them after commit
// (runs.Service.ReleaseLimit).
type Releaser interface {
	ReleaseLimit(ctx context.Context, tenantID, name string) (int, error)
}

// Service is the named limits' door.
type Service struct {
	runs Releaser
	now  func() time.Time
}

// New returns a Service; runs releases held steps when a limit is raised
// or deleted (nil: the dispatch sweep does, within its interval).
func New(runs Releaser) *Service {
	return &Service{runs: runs, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// Check validates a limit's name and value; path prefixes the problems'
// paths ("input" for the mutation's input, "limits.<name>" in a manifest).
func Check(path, name string, limit int) []errs.Problem {
	var p []errs.Problem
	if !ValidName(name) {
		p = append(p, errs.Problem{Path: path + ".name", Message: NameRule})
	}
	if limit < 1 || limit > MaxLimit {
		p = append(p, errs.Problem{Path: path + ".limit", Message: fmt.Sprintf("must be between 1 and %d", MaxLimit)})
	}
	return p
}

// Set creates the named limit, or changes its limit. Admins only.
func (s *Service) Set(ctx context.Context, name string, limit int) (*Limit, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if p := Check("input", name, limit); len(p) > 0 {
		return nil, errs.InvalidAll("invalid concurrency limit", p)
	}
	l, _, err := setLimit(ctx, c, s.runs, v.TenantID, v.Subject, name, limit, s.now())
	if err != nil {
		return nil, err
	}
	return s.view(ctx, l)
}

// Apply sets the limits of a tenant manifest's `limits:` block in the
// caller's tenant transaction (c), as subject; limits the block does not
// name are left as they are. Each change is audited; the dispatch sweep
// releases what a raised limit lets run. It returns how many limits it
// created or changed.
func Apply(ctx context.Context, c *ent.Client, tenantID, subject string, set map[string]int) (int, error) {
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	slices.Sort(names)
	n := 0
	now := time.Now().UTC().Truncate(time.Microsecond)
	for _, name := range names {
		_, changed, err := setLimit(ctx, c, nil, tenantID, subject, name, set[name], now)
		if err != nil {
			return n, fmt.Errorf("limits.%s: %w", name, err)
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// setLimit writes a limit under its name's lock, audits a change and
// releases what a raised limit lets run (runs nil: the sweep does).
// changed reports a new or changed limit.
func setLimit(ctx context.Context, c *ent.Client, runs Releaser, tenantID, subject, name string, limit int, now time.Time) (*ent.ConcurrencyLimit, bool, error) {
	if err := lockName(ctx, c, tenantID, name); err != nil {
		return nil, false, err
	}
	cur, err := c.ConcurrencyLimit.Query().Where(concurrencylimit.Name(name)).Only(ctx)
	if err != nil && !ent.IsNotFound(err) {
		return nil, false, err
	}
	if cur != nil && cur.MaxRunning == limit {
		return cur, false, nil
	}
	var l *ent.ConcurrencyLimit
	action, data := "concurrency_limit.create", map[string]any{"name": name, "limit": limit}
	if cur == nil {
		l, err = c.ConcurrencyLimit.Create().SetName(name).SetMaxRunning(limit).SetUpdatedBy(subject).
			SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
	} else {
		action, data["previousLimit"] = "concurrency_limit.update", cur.MaxRunning
		l, err = cur.Update().SetMaxRunning(limit).SetUpdatedBy(subject).SetUpdatedAt(now).Save(ctx)
	}
	if err != nil {
		return nil, false, store.ConflictIfExists(err, "concurrency limit "+name)
	}
	if cur != nil && limit > cur.MaxRunning && runs != nil {
		if _, err := runs.ReleaseLimit(ctx, tenantID, name); err != nil {
			return nil, false, err
		}
	}
	if err := audit.Record(ctx, c, action, "ConcurrencyLimit", l.ID, data); err != nil {
		return nil, false, err
	}
	return l, true, nil
}

// Delete deletes the named limit. Admins only. Steps that still name it run
// unlimited from now on; the steps held for it are released.
func (s *Service) Delete(ctx context.Context, name string) (string, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if !ValidName(name) {
		return "", errs.Invalid("name", NameRule)
	}
	if err := lockName(ctx, c, v.TenantID, name); err != nil {
		return "", err
	}
	cur, err := c.ConcurrencyLimit.Query().Where(concurrencylimit.Name(name)).Only(ctx)
	if ent.IsNotFound(err) {
		return "", &errs.Error{Code: errs.NotFound, Message: fmt.Sprintf("concurrency limit %q not found", name),
			Problems: []errs.Problem{{Path: "name", Message: "not found"}}}
	}
	if err != nil {
		return "", err
	}
	if err := c.ConcurrencyLimit.DeleteOne(cur).Exec(ctx); err != nil {
		return "", fmt.Errorf("delete concurrency limit: %w", err)
	}
	released := 0
	if s.runs != nil {
		if released, err = s.runs.ReleaseLimit(ctx, v.TenantID, name); err != nil {
			return "", err
		}
	}
	return name, audit.Record(ctx, c, "concurrency_limit.delete", "ConcurrencyLimit", cur.ID,
		map[string]any{"name": name, "limit": cur.MaxRunning, "releasedSteps": released})
}

// List returns the caller's tenant's limits by name, each with its steps
// running and held now. Every role may read them.
func (s *Service) List(ctx context.Context) ([]*Limit, error) {
	_, c, err := access.Authorize(ctx, viewer.RoleViewer, viewer.RoleOperator, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	all, err := c.ConcurrencyLimit.Query().Order(ent.Asc(concurrencylimit.FieldName)).All(ctx)
	if err != nil || len(all) == 0 {
		return nil, err
	}
	return views(ctx, all)
}

// view is one limit with its counts.
func (s *Service) view(ctx context.Context, l *ent.ConcurrencyLimit) (*Limit, error) {
	out, err := views(ctx, []*ent.ConcurrencyLimit{l})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// views counts, in one statement, the steps running and held under each
// limit (the partial indexes on step_runs and held_steps by limit name).
func views(ctx context.Context, all []*ent.ConcurrencyLimit) ([]*Limit, error) {
	names := make([]string, len(all))
	out := make([]*Limit, len(all))
	byName := make(map[string]*Limit, len(all))
	for i, l := range all {
		names[i] = l.Name
		out[i] = &Limit{ID: l.ID, Name: l.Name, Limit: l.MaxRunning, UpdatedBy: l.UpdatedBy, CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt}
		byName[l.Name] = out[i]
	}
	tenantID := all[0].TenantID
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT n.name,
			(SELECT count(*) FROM step_runs s WHERE s.tenant_id = $1 AND s.limit_name = n.name AND s.status = 'running'),
			(SELECT count(*) FROM held_steps h WHERE h.tenant_id = $1 AND h.limit_name = n.name)
		FROM unnest($2::text[]) AS n(name)`, tenantID, names)
	if err != nil {
		return nil, fmt.Errorf("concurrency limit counts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var running, held int
		if err := rows.Scan(&name, &running, &held); err != nil {
			return nil, err
		}
		if l := byName[name]; l != nil {
			l.Running, l.Held = running, held
		}
	}
	return out, rows.Err()
}

// lockName serialises changes of one limit.
func lockName(ctx context.Context, c *ent.Client, tenantID, name string) error {
	_, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "limits/"+tenantID+"/"+name)
	return err
}
