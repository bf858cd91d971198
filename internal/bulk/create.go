package bulk

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/ent/workflow"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Filter chooses runs; every field set narrows the set.
type Filter struct {
	WorkflowID, EnvironmentID *string
	Status                    []run.Status
	// FailureClass is the run's error class; "unknown" takes failed runs
	// without one (as the dead-letter view groups them).
	FailureClass, FailedStepID, VersionID *string
	// From and To bound the runs' creation: [From, To).
	From, To *time.Time
}

// RunOptions are what resume and replay take besides the run.
type RunOptions struct {
	VersionID  *string
	InputPatch map[string]any
	// Sandbox: REPLAY in SANDBOX mode.
	Sandbox bool
	// ModeSet: a mode was given (only REPLAY takes one).
	ModeSet bool
}

// Input is what bulkRunAction takes.
type Input struct {
	Action       bulkoperation.Action
	RunIDs       []string // nil when Filter is given
	Filter       *Filter
	Options      RunOptions
	DryRun       bool
	ConfirmLarge bool
}

// DryRun is what a dry run answers.
type DryRun struct {
	Count             int
	RunIDs            []string
	NeedsConfirmLarge bool
}

// Result is a created operation or a dry run's answer.
type Result struct {
	Operation *ent.BulkOperation
	DryRun    *DryRun
}

// maxInputPatch bounds an input patch (bytes of JSON).
const maxInputPatch = 64 << 10

// Create validates a bulk action and, unless it is a dry run, fixes its
// runs as a new operation (queued for the processor). Bad input is
// VALIDATION with the field path and writes nothing; ids of another
// tenant (or outside an environment-scoped key's environment) answer as
// missing ones.
func (s *Service) Create(ctx context.Context, in Input) (*Result, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator)
	if err != nil {
		return nil, err
	}
	if bulkoperation.ActionValidator(in.Action) != nil {
		return nil, errs.Invalid("input.action", "must be CANCEL, RESUME or REPLAY")
	}
	workflowID, err := s.validateChoice(ctx, c, v, &in)
	if err != nil {
		return nil, err
	}
	versionWorkflow, err := s.validateOptions(ctx, c, &in, workflowID)
	if err != nil {
		return nil, err
	}
	q := c.Run.Query().Where(s.predicates(v, &in)...)
	if in.RunIDs != nil {
		found, err := q.Clone().IDs(ctx)
		if err != nil {
			return nil, err
		}
		for i, id := range in.RunIDs {
			if !slices.Contains(found, id) {
				return nil, errs.NotFoundf("run", in.RunIDs[i])
			}
		}
		if versionWorkflow != nil {
			// Every run must be of the version's workflow.
			n, err := q.Clone().Where(run.WorkflowIDNEQ(*versionWorkflow)).Count(ctx)
			if err != nil {
				return nil, err
			}
			if n > 0 {
				return nil, errs.Invalid("input.options.versionID", "%d of the runs are of another workflow than this version's", n)
			}
		}
	}
	count, err := q.Clone().Count(ctx)
	if err != nil {
		return nil, err
	}
	large := in.RunIDs == nil && count > LargeThreshold
	if in.DryRun {
		sample, err := q.Clone().Order(ent.Asc(run.FieldCreatedAt), ent.Asc(run.FieldID)).Limit(DryRunSample).IDs(ctx)
		if err != nil {
			return nil, err
		}
		return &Result{DryRun: &DryRun{Count: count, RunIDs: sample, NeedsConfirmLarge: large}}, nil
	}
	switch {
	case count == 0:
		return nil, errs.Invalid("input.filter", "no runs match; nothing to do")
	case count > MaxRuns:
		return nil, errs.Invalid("input.filter", "%d runs match, more than %d for one operation; narrow the filter (by time, for example)", count, MaxRuns)
	case large && !in.ConfirmLarge:
		return nil, errs.Invalid("input.confirmLarge", "%d runs match, more than %d: set confirmLarge: true to act on all of them", count, LargeThreshold)
	}
	runIDs, err := q.Clone().Order(ent.Asc(run.FieldCreatedAt), ent.Asc(run.FieldID)).IDs(ctx)
	if err != nil {
		return nil, err
	}
	now := s.now()
	oc := c.BulkOperation.Create().SetID(ids.New(ids.BulkOperation)).SetCreatedAt(now).SetUpdatedAt(now).
		SetAction(in.Action).SetTotal(len(runIDs)).SetCreatedBy(v.Subject).SetEnvironmentScope(v.EnvironmentID)
	if in.Filter != nil {
		oc.SetRunFilter(filterMap(in.Filter))
	}
	if o := optionsMap(in.Options); len(o) > 0 {
		oc.SetOptions(o)
	}
	op, err := oc.Save(ctx)
	if err != nil {
		return nil, err
	}
	const chunk = 2000
	for start := 0; start < len(runIDs); start += chunk {
		part := runIDs[start:min(start+chunk, len(runIDs))]
		bulk := make([]*ent.BulkOperationItemCreate, len(part))
		for i, id := range part {
			bulk[i] = c.BulkOperationItem.Create().SetID(ids.New(ids.BulkOperationItem)).SetCreatedAt(now).SetUpdatedAt(now).
				SetOperationID(op.ID).SetPosition(start + i).SetRunID(id)
		}
		if err := c.BulkOperationItem.CreateBulk(bulk...).Exec(ctx); err != nil {
			return nil, fmt.Errorf("write items: %w", err)
		}
	}
	// The processor visits tenants with open operations only (bookkeeping
	// only Sluice writes, like open_evaluations).
	if err := c.Tenant.Update().Where(tenant.ID(v.TenantID)).AddOpenBulkOperations(1).
		Exec(privacy.DecisionContext(ctx, privacy.Allow)); err != nil {
		return nil, fmt.Errorf("count open bulk operation: %w", err)
	}
	meta := map[string]any{"action": string(in.Action), "total": len(runIDs)}
	if op.RunFilter != nil {
		meta["filter"] = op.RunFilter
	} else {
		meta["runIDs"] = len(runIDs)
	}
	if op.Options != nil {
		meta["options"] = op.Options
	}
	if err := audit.Record(ctx, c, "bulk_operation.create", "BulkOperation", op.ID, meta); err != nil {
		return nil, err
	}
	s.publishAfterCommit(ctx, v.TenantID, op.ID, string(op.Status))
	return &Result{Operation: op}, nil
}

// validateChoice checks runIDs or filter and returns the workflow the
// runs are of when the request names one (filter.workflowID).
func (s *Service) validateChoice(ctx context.Context, c *ent.Client, v *viewer.Viewer, in *Input) (*string, error) {
	switch {
	case in.RunIDs != nil && in.Filter != nil:
		return nil, errs.Invalid("input.runIDs", "give either runIDs or filter, not both")
	case in.RunIDs == nil && in.Filter == nil:
		return nil, errs.Invalid("input.filter", "give runIDs or filter")
	case in.RunIDs != nil:
		if len(in.RunIDs) == 0 {
			return nil, errs.Invalid("input.runIDs", "must not be empty")
		}
		if len(in.RunIDs) > MaxRunIDs {
			return nil, errs.Invalid("input.runIDs", "at most %d ids; use a filter for more", MaxRunIDs)
		}
		seen := map[string]bool{}
		for i, id := range in.RunIDs {
			if seen[id] {
				return nil, errs.Invalid(fmt.Sprintf("input.runIDs[%d]", i), "run %s is listed twice", id)
			}
			seen[id] = true
		}
		return nil, nil
	}
	f := in.Filter
	if f.WorkflowID != nil {
		ok, err := c.Workflow.Query().Where(workflow.ID(*f.WorkflowID)).Exist(ctx)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errs.NotFoundf("workflow", *f.WorkflowID)
		}
	}
	if f.EnvironmentID != nil {
		ok, err := c.Environment.Query().Where(environment.ID(*f.EnvironmentID)).Exist(ctx)
		if err != nil {
			return nil, err
		}
		if !ok || !access.InScope(v, *f.EnvironmentID) {
			return nil, errs.NotFoundf("environment", *f.EnvironmentID)
		}
	}
	if f.VersionID != nil {
		ok, err := c.WorkflowVersion.Query().Where(workflowversion.ID(*f.VersionID)).Exist(ctx)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, errs.NotFoundf("workflow version", *f.VersionID)
		}
	}
	for i, st := range f.Status {
		p := fmt.Sprintf("input.filter.status[%d]", i)
		if err := run.StatusValidator(st); err != nil {
			return nil, errs.Invalid(p, "unknown run status %q", st)
		}
		switch in.Action {
		case bulkoperation.ActionResume:
			if st != run.StatusFailed {
				return nil, errs.Invalid(p, "RESUME takes failed runs only")
			}
		case bulkoperation.ActionCancel:
			if !unfinished(st) {
				return nil, errs.Invalid(p, "CANCEL takes unfinished runs only (queued, running, waiting)")
			}
		}
	}
	if f.FailureClass != nil {
		if *f.FailureClass == "" || len(*f.FailureClass) > 100 {
			return nil, errs.Invalid("input.filter.failureClass", "must be 1 to 100 characters")
		}
		if len(f.Status) > 0 && !slices.Contains(f.Status, run.StatusFailed) {
			return nil, errs.Invalid("input.filter.failureClass", "takes failed runs, and status leaves them out")
		}
		if in.Action == bulkoperation.ActionCancel {
			return nil, errs.Invalid("input.filter.failureClass", "CANCEL takes unfinished runs, which have no failure class")
		}
	}
	if f.FailedStepID != nil && in.Action == bulkoperation.ActionCancel {
		return nil, errs.Invalid("input.filter.failedStepID", "CANCEL takes unfinished runs, which have no failed step")
	}
	if f.From != nil && f.To != nil && !f.From.Before(*f.To) {
		return nil, errs.Invalid("input.filter.to", "must be after from")
	}
	return f.WorkflowID, nil
}

// validateOptions checks the options against the action; a versionID
// must be a published version of the runs' workflow.
func (s *Service) validateOptions(ctx context.Context, c *ent.Client, in *Input, workflowID *string) (*string, error) {
	o := in.Options
	if in.Action == bulkoperation.ActionCancel {
		switch {
		case o.VersionID != nil:
			return nil, errs.Invalid("input.options.versionID", "CANCEL takes no version")
		case o.InputPatch != nil:
			return nil, errs.Invalid("input.options.inputPatch", "CANCEL takes no input patch")
		}
	}
	if o.ModeSet && in.Action != bulkoperation.ActionReplay {
		return nil, errs.Invalid("input.options.mode", "only REPLAY takes a mode")
	}
	if o.InputPatch != nil {
		b, err := json.Marshal(o.InputPatch)
		if err != nil {
			return nil, errs.Invalid("input.options.inputPatch", "is not JSON: %v", err)
		}
		if len(b) > maxInputPatch {
			return nil, errs.Invalid("input.options.inputPatch", "at most %d bytes of JSON", maxInputPatch)
		}
		if o.Sandbox {
			return nil, errs.Invalid("input.options.inputPatch", "a SANDBOX replay runs the source run's input; patch the input in a LIVE replay")
		}
	}
	if o.VersionID == nil {
		return nil, nil
	}
	wv, err := c.WorkflowVersion.Get(ctx, *o.VersionID)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("workflow version", *o.VersionID)
	}
	if err != nil {
		return nil, err
	}
	if wv.Status != workflowversion.StatusPublished {
		return nil, errs.Invalid("input.options.versionID", "is a draft; publish it first")
	}
	if in.Filter != nil {
		if workflowID == nil {
			return nil, errs.Invalid("input.options.versionID", "needs filter.workflowID: a version belongs to one workflow")
		}
		if *workflowID != wv.WorkflowID {
			return nil, errs.Invalid("input.options.versionID", "belongs to another workflow than filter.workflowID")
		}
	}
	return &wv.WorkflowID, nil
}
