package bulk

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/ent/predicate"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

func unfinished(st run.Status) bool {
	return st == run.StatusQueued || st == run.StatusRunning || st == run.StatusWaiting
}

// predicates is the runs the request takes, within the viewer's
// environment when it is restricted to one.
func (s *Service) predicates(v *viewer.Viewer, in *Input) []predicate.Run {
	var ps []predicate.Run
	if v.EnvironmentID != "" {
		ps = append(ps, run.EnvironmentID(v.EnvironmentID))
	}
	if in.RunIDs != nil {
		return append(ps, run.IDIn(in.RunIDs...))
	}
	f := in.Filter
	if f.WorkflowID != nil {
		ps = append(ps, run.WorkflowID(*f.WorkflowID))
	}
	if f.EnvironmentID != nil {
		ps = append(ps, run.EnvironmentID(*f.EnvironmentID))
	}
	if f.VersionID != nil {
		ps = append(ps, run.VersionID(*f.VersionID))
	}
	status := f.Status
	if len(status) == 0 {
		switch {
		case in.Action == bulkoperation.ActionResume || f.FailureClass != nil || f.FailedStepID != nil:
			status = []run.Status{run.StatusFailed}
		case in.Action == bulkoperation.ActionCancel:
			status = []run.Status{run.StatusQueued, run.StatusRunning, run.StatusWaiting}
		}
	}
	if len(status) > 0 {
		ps = append(ps, run.StatusIn(status...))
	}
	if f.FailureClass != nil {
		if *f.FailureClass == "unknown" {
			// As the dead-letter view names failed runs without a class.
			ps = append(ps, run.Or(run.ErrorClass("unknown"), run.ErrorClassIsNil()))
		} else {
			ps = append(ps, run.ErrorClass(*f.FailureClass))
		}
	}
	if f.FailedStepID != nil {
		ps = append(ps, run.FailedStepID(*f.FailedStepID))
	}
	if f.From != nil {
		ps = append(ps, run.CreatedAtGTE(*f.From))
	}
	if f.To != nil {
		ps = append(ps, run.CreatedAtLT(*f.To))
	}
	return ps
}

// filterMap is the filter as the operation keeps it (and shows it).
func filterMap(f *Filter) map[string]any {
	m := map[string]any{}
	set := func(k string, v *string) {
		if v != nil {
			m[k] = *v
		}
	}
	set("workflowID", f.WorkflowID)
	set("environmentID", f.EnvironmentID)
	set("failureClass", f.FailureClass)
	set("failedStepID", f.FailedStepID)
	set("versionID", f.VersionID)
	if len(f.Status) > 0 {
		st := make([]string, len(f.Status))
		for i, x := range f.Status {
			st[i] = string(x)
		}
		m["status"] = st
	}
	if f.From != nil {
		m["from"] = f.From.UTC().Format(time.RFC3339Nano)
	}
	if f.To != nil {
		m["to"] = f.To.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// optionsMap is the options as the operation keeps them; the processor
// reads them back (optionsOf).
func optionsMap(o RunOptions) map[string]any {
	m := map[string]any{}
	if o.VersionID != nil {
		m["versionID"] = *o.VersionID
	}
	if o.InputPatch != nil {
		m["inputPatch"] = o.InputPatch
	}
	if o.ModeSet {
		mode := "LIVE"
		if o.Sandbox {
			mode = "SANDBOX"
		}
		m["mode"] = mode
	}
	return m
}

// optionsOf reads back what optionsMap kept.
func optionsOf(m map[string]any) RunOptions {
	var o RunOptions
	if v, ok := m["versionID"].(string); ok {
		o.VersionID = &v
	}
	if p, ok := m["inputPatch"].(map[string]any); ok {
		o.InputPatch = p
	}
	if mode, ok := m["mode"].(string); ok {
		o.ModeSet, o.Sandbox = true, mode == "SANDBOX"
	}
	return o
}

// publishAfterCommit tells live subscribers that an operation changed,
// once the transaction in ctx commits.
func (s *Service) publishAfterCommit(ctx context.Context, tenantID, id, status string) {
	if s.o.Publisher == nil {
		return
	}
	store.AfterCommit(ctx, func() { s.o.Publisher.PublishBulkOperation(context.WithoutCancel(ctx), tenantID, id, status) })
}
