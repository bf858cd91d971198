package export

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	entexport "github.com/sluicehq/sluice/ent/export"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/ent/workflow"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/exportspec"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Kinds of rows an export can include, in the order files are written.
const (
	KindRuns   = "RUNS"
	KindEvents = "EVENTS"
	KindSteps  = "STEPS"
	KindAudit  = "AUDIT"
	KindCost   = "COST"
	// KindManifest is the manifest's kind in Export.files.
	KindManifest = "MANIFEST"
	// ManifestFile is the manifest's file name.
	ManifestFile = "manifest.json"
)

var kinds = []string{KindRuns, KindEvents, KindSteps, KindAudit, KindCost}

// FileName is the name of a kind's file.
func FileName(kind string) string { return strings.ToLower(kind) + ".ndjson.gz" }

// Input is what createExport takes.
type Input struct {
	Scope    entexport.Scope
	ScopeID  *string
	From, To time.Time
	Include  []string
}

// Create validates the input and queues the export. Admins only; bad input
// is VALIDATION naming the field, with nothing written.
func (s *Service) Create(ctx context.Context, in Input) (*ent.Export, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	var problems []errs.Problem
	bad := func(path, format string, args ...any) {
		problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if err := entexport.ScopeValidator(in.Scope); err != nil {
		bad("input.scope", "must be TENANT, ENVIRONMENT or WORKFLOW")
	}
	scopeID := ""
	if in.ScopeID != nil {
		scopeID = strings.TrimSpace(*in.ScopeID)
	}
	switch in.Scope {
	case entexport.ScopeTenant:
		if scopeID != "" {
			bad("input.scopeID", "not given for scope TENANT")
		}
	case entexport.ScopeEnvironment, entexport.ScopeWorkflow:
		if scopeID == "" {
			bad("input.scopeID", "required for scope %s", in.Scope)
			break
		}
		var found bool
		if in.Scope == entexport.ScopeEnvironment {
			found, err = c.Environment.Query().Where(environment.ID(scopeID)).Exist(ctx)
		} else {
			found, err = c.Workflow.Query().Where(workflow.ID(scopeID)).Exist(ctx)
		}
		if err != nil {
			return nil, err
		}
		if !found {
			bad("input.scopeID", "no such %s", strings.ToLower(string(in.Scope)))
		}
	}
	from, to := in.From.UTC(), in.To.UTC()
	switch {
	case !to.After(from):
		bad("input.to", "must be after from")
	case to.Sub(from) > MaxRange:
		bad("input.to", "at most 366 days after from")
	}
	if len(in.Include) == 0 {
		bad("input.include", "name at least one of %s", strings.Join(kinds, ", "))
	}
	var include []string
	for i, k := range in.Include {
		switch {
		case !slices.Contains(kinds, k):
			bad(fmt.Sprintf("input.include.%d", i), "unknown kind %q", k)
		case slices.Contains(include, k):
			bad(fmt.Sprintf("input.include.%d", i), "%s given twice", k)
		default:
			include = append(include, k)
		}
	}
	if len(problems) > 0 {
		return nil, invalid(problems)
	}
	slices.SortFunc(include, func(a, b string) int { return slices.Index(kinds, a) - slices.Index(kinds, b) })
	now := s.now()
	q := c.Export.Create().SetID(ids.New(ids.Export)).SetCreatedAt(now).SetUpdatedAt(now).
		SetScope(in.Scope).SetRangeFrom(from).SetRangeTo(to).SetInclude(include).
		SetCreatedBy(v.Subject).SetExpiresAt(now.Add(s.o.TTL))
	if scopeID != "" {
		q.SetScopeID(scopeID)
	}
	e, err := q.Save(ctx)
	if err != nil {
		return nil, err
	}
	// The driver visits tenants with open exports only (bookkeeping only
	// Sluice writes, like open_evaluations).
	if err := countOpen(ctx, c, v.TenantID, 1); err != nil {
		return nil, err
	}
	return e, audit.Record(ctx, c, "export.create", "Export", e.ID, map[string]any{
		"scope": string(e.Scope), "scopeID": scopeID, "from": from, "to": to, "include": include,
	})
}

// Query returns the tenant's exports, for admins.
func (s *Service) Query(ctx context.Context) (*ent.ExportQuery, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	return c.Export.Query(), nil
}

// DownloadURL mints a signed URL for one file of a SUCCEEDED export, valid
// for the configured URL lifetime or expiresIn when shorter. Admins only;
// another tenant's export is NOT_FOUND like a missing one; audited.
func (s *Service) DownloadURL(ctx context.Context, id, file string, expiresIn *string) (string, time.Time, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", time.Time{}, err
	}
	ttl := s.o.URLTTL
	if expiresIn != nil {
		d, err := time.ParseDuration(*expiresIn)
		switch {
		case err != nil:
			return "", time.Time{}, errs.Invalid("expiresIn", "not a duration (such as 90s, 10m): %s", *expiresIn)
		case d < MinURLTTL || d > s.o.URLTTL:
			return "", time.Time{}, errs.Invalid("expiresIn", "between %s and %s", MinURLTTL, s.o.URLTTL)
		}
		ttl = d
	}
	e, err := c.Export.Get(ctx, id)
	if ent.IsNotFound(err) {
		return "", time.Time{}, errs.NotFoundf("export", id)
	}
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.now()
	switch {
	case e.Status == entexport.StatusExpired || e.PurgedAt != nil || !now.Before(e.ExpiresAt):
		return "", time.Time{}, errs.E(errs.Conflict, "export %s has expired; its files are deleted", id)
	case e.Status != entexport.StatusSucceeded:
		return "", time.Time{}, errs.E(errs.Conflict, "export %s is %s; files can be downloaded once it has SUCCEEDED", id, e.Status)
	}
	if !slices.ContainsFunc(e.Files, func(f exportspec.File) bool { return f.Name == file }) {
		return "", time.Time{}, errs.Invalid("file", "export %s has no file %q", id, file)
	}
	exp := now.Add(ttl)
	if exp.After(e.ExpiresAt) {
		exp = e.ExpiresAt
	}
	exp = exp.Truncate(time.Second)
	// downloadURL is a query field, and a query's transaction is rolled
	// back: the entry goes in a transaction of its own, committed before
	// the URL is handed out.
	if err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		return audit.Record(ctx, ent.FromContext(ctx), "export.download_url", "Export", e.ID, map[string]any{"file": file, "expiresAt": exp})
	}); err != nil {
		return "", time.Time{}, err
	}
	return s.o.PublicURL + s.signer.Path(e.ID, file, exp), exp, nil
}

// Counts returns the rows written per kind.
func Counts(e *ent.Export) map[string]any {
	if e.Status != entexport.StatusSucceeded {
		return nil
	}
	out := map[string]any{}
	for _, f := range e.Files {
		if f.Kind != KindManifest {
			out[f.Kind] = f.Count
		}
	}
	return out
}

// countOpen moves the tenant's count of open (QUEUED or RUNNING) exports.
func countOpen(ctx context.Context, c *ent.Client, tenantID string, by int) error {
	if err := c.Tenant.Update().Where(tenant.ID(tenantID)).AddOpenExports(by).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return fmt.Errorf("count open exports: %w", err)
	}
	return nil
}

func invalid(problems []errs.Problem) error {
	if len(problems) == 1 {
		return errs.Invalid(problems[0].Path, "%s", problems[0].Message)
	}
	msg := make([]string, len(problems))
	for i, p := range problems {
		msg[i] = p.Path + ": " + p.Message
	}
	return errs.InvalidAll(strings.Join(msg, "; "), problems)
}
