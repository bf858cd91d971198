// Package concurrency owns a workflow's concurrency setting per
// environment: the workflow_concurrencies rows (one per workflow and
// environment, tenant data under RLS), setWorkflowConcurrency with its
// validation and audit entries, and workflowConcurrency, the setting a
// workflow's runs get in an environment and where it comes from.
//
// An environment's setting overrides the definition's `concurrency` for the
// workflow's runs there, whatever version is deployed; removing it lets the
// definition's apply again. The run state machine (internal/runs,
// envconcurrency.go) reads it where it reads anyway: startRun's deployment
// statement, and sluice_release_key at a keyed run's finish and in the
// keys' sweep.
package concurrency

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/workflowconcurrency"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Where a setting comes from.
const (
	SourceDefinition  = "DEFINITION"
	SourceEnvironment = "ENVIRONMENT"
)

// Setting is a workflow's concurrency in an environment.
type Setting struct {
	WorkflowID, EnvironmentID string
	// Effective is what runs there get: Override's setting, else the
	// deployed definition's; nil when neither has one.
	Effective *definition.Concurrency
	// Source is SourceEnvironment or SourceDefinition; "" with no Effective.
	Source string
	// Override is the environment's row, if any.
	Override *ent.WorkflowConcurrency
}

// OverrideSetting is the override's setting, or nil.
func (s *Setting) OverrideSetting() *definition.Concurrency {
	if s.Override == nil {
		return nil
	}
	return settingOf(s.Override)
}

func settingOf(o *ent.WorkflowConcurrency) *definition.Concurrency {
	return &definition.Concurrency{Limit: o.RunLimit, Key: o.Key, OnLimit: o.OnLimit}
}

// Service is the room's door.
type Service struct{ now func() time.Time }

// New returns a Service on a clock (nil: the UTC wall clock at
// microseconds, what Postgres keeps).
func New(now func() time.Time) *Service {
	if now == nil {
		now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	return &Service{now: now}
}

// Get returns the workflow's setting in the environment. Every member may
// read it.
func (s *Service) Get(ctx context.Context, workflowID, environmentID string) (*Setting, error) {
	_, c, err := access.Authorize(ctx, viewer.Roles...)
	if err != nil {
		return nil, err
	}
	if err := target(ctx, c, workflowID, environmentID, ""); err != nil {
		return nil, err
	}
	o, err := c.WorkflowConcurrency.Query().
		Where(workflowconcurrency.WorkflowID(workflowID), workflowconcurrency.EnvironmentID(environmentID)).Only(ctx)
	if ent.IsNotFound(err) {
		o, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	return resolve(ctx, c, workflowID, environmentID, o)
}

// Set sets (c not nil) or removes (c nil) the workflow's override in the
// environment. Editors (and admins, owners) may. A bad setting is
// VALIDATION at input.concurrency.<field> and writes nothing.
func (s *Service) Set(ctx context.Context, workflowID, environmentID string, set *definition.Concurrency) (*Setting, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if err := target(ctx, c, workflowID, environmentID, "input."); err != nil {
		return nil, err
	}
	if set != nil {
		def, err := deployed(ctx, c, workflowID, environmentID)
		if err != nil {
			return nil, err
		}
		if problems := definition.CheckConcurrency(set, def); len(problems) > 0 {
			list := make([]errs.Problem, 0, len(problems))
			for _, p := range problems {
				list = append(list, errs.Problem{Path: "input.concurrency" + p.Path[1:], Message: p.Message})
			}
			return nil, errs.InvalidAll("invalid concurrency setting: "+list[0].Path+": "+list[0].Message, list)
		}
		if set.OnLimit == "" {
			set.OnLimit = definition.OnLimitQueue
		}
	}
	// Sets of one workflow in one environment take turns.
	if _, err := c.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "concurrency/"+v.TenantID+"/"+workflowID+"/"+environmentID); err != nil {
		return nil, err
	}
	cur, err := c.WorkflowConcurrency.Query().
		Where(workflowconcurrency.WorkflowID(workflowID), workflowconcurrency.EnvironmentID(environmentID)).Only(ctx)
	if ent.IsNotFound(err) {
		cur, err = nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := s.now()
	data := map[string]any{"workflowID": workflowID, "environmentID": environmentID}
	var o *ent.WorkflowConcurrency
	switch {
	case set == nil && cur == nil:
		// Nothing to remove: nothing changes, nothing is written.
		return resolve(ctx, c, workflowID, environmentID, nil)
	case set == nil:
		if err := c.WorkflowConcurrency.DeleteOne(cur).Exec(ctx); err != nil {
			return nil, fmt.Errorf("delete concurrency override: %w", err)
		}
		data["removed"] = describe(settingOf(cur))
		if err := audit.Record(ctx, c, "workflow.concurrency.remove", "Workflow", workflowID, data); err != nil {
			return nil, err
		}
		return resolve(ctx, c, workflowID, environmentID, nil)
	case cur == nil:
		o, err = c.WorkflowConcurrency.Create().SetWorkflowID(workflowID).SetEnvironmentID(environmentID).
			SetRunLimit(set.Limit).SetKey(set.Key).SetOnLimit(set.OnLimit).SetUpdatedBy(v.Subject).
			SetCreatedAt(now).SetUpdatedAt(now).Save(ctx)
	default:
		data["previous"] = describe(settingOf(cur))
		o, err = cur.Update().SetRunLimit(set.Limit).SetKey(set.Key).SetOnLimit(set.OnLimit).SetUpdatedBy(v.Subject).
			SetUpdatedAt(now).Save(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("save concurrency override: %w", err)
	}
	data["concurrency"] = describe(set)
	if err := audit.Record(ctx, c, "workflow.concurrency.set", "Workflow", workflowID, data); err != nil {
		return nil, err
	}
	return resolve(ctx, c, workflowID, environmentID, o)
}

func describe(c *definition.Concurrency) map[string]any {
	return map[string]any{"limit": c.Limit, "key": c.Key, "onLimit": c.Mode()}
}

// target checks that the workflow and the environment exist for the
// caller (another tenant's are not found) before anything is written;
// prefix is the input's path ("input." for a mutation's input).
func target(ctx context.Context, c *ent.Client, workflowID, environmentID, prefix string) error {
	if _, err := c.Workflow.Get(ctx, workflowID); ent.IsNotFound(err) {
		return &errs.Error{Code: errs.NotFound, Message: fmt.Sprintf("workflow %q not found", workflowID),
			Problems: []errs.Problem{{Path: prefix + "workflowID", Message: "not found"}}}
	} else if err != nil {
		return err
	}
	_, err := control.EnvironmentByID(ctx, c, environmentID, prefix+"environmentID")
	return err
}

// deployed is the definition of the version deployed for the workflow in
// the environment, or nil when none is.
func deployed(ctx context.Context, c *ent.Client, workflowID, environmentID string) (*definition.Definition, error) {
	d, err := c.Deployment.Query().
		Where(deployment.WorkflowID(workflowID), deployment.EnvironmentID(environmentID), deployment.Active(true)).
		WithVersion().First(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	wv := d.Edges.Version
	if wv == nil {
		return nil, nil
	}
	raw, err := json.Marshal(wv.Definition)
	if err != nil {
		return nil, err
	}
	def, err := definition.ParseStored(raw)
	if err != nil {
		return nil, fmt.Errorf("parse definition of %s: %w", wv.ID, err)
	}
	return def, nil
}

// resolve is the setting with the override o (nil: none).
func resolve(ctx context.Context, c *ent.Client, workflowID, environmentID string, o *ent.WorkflowConcurrency) (*Setting, error) {
	s := &Setting{WorkflowID: workflowID, EnvironmentID: environmentID, Override: o}
	if o != nil {
		s.Effective, s.Source = settingOf(o), SourceEnvironment
		return s, nil
	}
	def, err := deployed(ctx, c, workflowID, environmentID)
	if err != nil {
		return nil, err
	}
	if def != nil && def.Concurrency != nil {
		s.Effective, s.Source = def.Concurrency, SourceDefinition
	}
	return s, nil
}
