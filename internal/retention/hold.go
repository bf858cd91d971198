package retention

import (
	"context"

	"entgo.io/ent/dialect/sql"
	"entgo.io/ent/dialect/sql/sqljson"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/evaluationexample"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/slabreach"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// MaxHoldReason bounds a legal hold's reason, in characters.
const MaxHoldReason = 2000

// Hold puts a run under a legal hold: retention purges nothing of it until
// the hold is released. Holding a held run replaces its reason.
func (s *Service) Hold(ctx context.Context, runID, reason string) (*ent.Run, error) {
	v, c, r, err := s.lockRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	reason = strings.TrimSpace(reason)
	switch {
	case reason == "":
		return nil, errs.Invalid("reason", "is required: say why the run is held (a case, a request)")
	case utf8.RuneCountInString(reason) > MaxHoldReason:
		return nil, errs.Invalid("reason", "must be at most %d characters", MaxHoldReason)
	}
	if r.PayloadPurgedAt != nil {
		return nil, errs.E(errs.Conflict, "run %s's payloads were purged at %s; a hold keeps what is left (its tombstone) from deletion",
			runID, r.PayloadPurgedAt.UTC().Format(time.RFC3339))
	}
	now := s.o.Now()
	prev := r.HoldReason
	r, err = c.Run.UpdateOne(r).SetHoldReason(reason).SetHeldBy(v.Subject).SetHeldAt(now).Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("hold run: %w", err)
	}
	meta := map[string]any{"reason": reason}
	if prev != nil {
		meta["previousReason"] = *prev
	}
	return r, audit.Record(ctx, c, "run.hold", "Run", runID, meta)
}

// ReleaseHold ends a run's legal hold; retention applies again from the
// run's finish. Releasing a run that is not held changes nothing and
// writes nothing.
func (s *Service) ReleaseHold(ctx context.Context, runID string) (*ent.Run, error) {
	_, c, r, err := s.lockRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	if r.HoldReason == nil {
		return r, nil
	}
	meta := map[string]any{"reason": *r.HoldReason, "heldBy": deref(r.HeldBy), "heldAt": r.HeldAt}
	r, err = c.Run.UpdateOne(r).ClearHoldReason().ClearHeldBy().ClearHeldAt().Save(ctx)
	if err != nil {
		return nil, fmt.Errorf("release hold: %w", err)
	}
	return r, audit.Record(ctx, c, "run.release_hold", "Run", runID, meta)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// lockRun authorizes an admin (tenant-wide) and locks the run; another
// tenant's run reads as missing.
func (s *Service) lockRun(ctx context.Context, runID string) (*viewer.Viewer, *ent.Client, *ent.Run, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := c.Run.Query().Where(run.ID(runID)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil, nil, errs.NotFoundf("run", runID)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return v, c, r, nil
}

// Reason is why a run keeps its payloads.
type Reason string

// Reasons, in the order they are checked.
const (
	ReasonPurged            Reason = "PURGED"
	ReasonOpen              Reason = "OPEN"
	ReasonLegalHold         Reason = "LEGAL_HOLD"
	ReasonOpenIncident      Reason = "OPEN_INCIDENT"
	ReasonEvaluationDataset Reason = "EVALUATION_DATASET"
	ReasonInUse             Reason = "IN_USE"
	ReasonPolicy            Reason = "POLICY"
)

// Status is what a run shows about its retention: why it is kept and until
// when. Until is when its payloads go (POLICY), or when its tombstone goes
// (PURGED); nil while it is kept whatever the policy.
type Status struct {
	Reason Reason
	Until  *time.Time
}

// StatusOf tells why run r is kept and until when, in c's transaction.
func (s *Service) StatusOf(ctx context.Context, c *ent.Client, r *ent.Run) (Status, error) {
	if r.FinishedAt == nil {
		return Status{Reason: ReasonOpen}, nil
	}
	if r.HoldReason != nil {
		return Status{Reason: ReasonLegalHold}, nil
	}
	open, err := c.Incident.Query().Where(incident.StatusNEQ(incident.StatusResolved),
		func(sel *sql.Selector) { sel.Where(sqljson.ValueContains(incident.FieldSampleRunIds, r.ID)) }).Exist(ctx)
	if err != nil {
		return Status{}, err
	}
	if !open {
		ids, err := c.SLABreach.Query().Where(slabreach.RunID(r.ID)).Select(slabreach.FieldIncidentID).Strings(ctx)
		if err != nil {
			return Status{}, err
		}
		if len(ids) > 0 {
			if open, err = c.Incident.Query().Where(incident.IDIn(ids...), incident.StatusNEQ(incident.StatusResolved)).Exist(ctx); err != nil {
				return Status{}, err
			}
		}
	}
	if open {
		return Status{Reason: ReasonOpenIncident}, nil
	}
	if held, err := c.EvaluationExample.Query().Where(evaluationexample.SourceRunID(r.ID)).Exist(ctx); err != nil {
		return Status{}, err
	} else if held {
		return Status{Reason: ReasonEvaluationDataset}, nil
	}
	res, err := NewResolver(ctx, c, r.TenantID)
	if err != nil {
		return Status{}, err
	}
	eff := res.ForRun(r.WorkflowID, r.EnvironmentID)
	if r.PayloadPurgedAt != nil {
		until := r.FinishedAt.Add(time.Duration(eff.Run) * s.o.Day)
		return Status{Reason: ReasonPurged, Until: &until}, nil
	}
	inUse, err := c.Run.Query().Where(run.Or(
		run.And(run.ReplayOf(r.ID), run.ModeEQ(run.ModeSandbox), run.FinishedAtIsNil()),
		run.And(run.IDEQ(deref(r.ParentRunID)), run.FinishedAtIsNil()),
	)).Exist(ctx)
	if err != nil {
		return Status{}, err
	}
	if inUse {
		return Status{Reason: ReasonInUse}, nil
	}
	until := r.FinishedAt.Add(time.Duration(eff.PurgeDays()) * s.o.Day)
	return Status{Reason: ReasonPolicy, Until: &until}, nil
}
