package graph

import (
	"context"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/evaluation"
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/evals"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/store"
)

func evaluateInput(in model.EvaluateVersionInput) evals.Input {
	out := evals.Input{WorkflowID: in.WorkflowID, EnvironmentID: in.EnvironmentID, CandidateVersionID: in.CandidateVersionID,
		Concurrency: in.Concurrency}
	if in.RecordedOnly != nil {
		out.RecordedOnly = *in.RecordedOnly
	}
	if in.BudgetMicroUsd != nil {
		b := int64(*in.BudgetMicroUsd)
		out.BudgetMicroUSD = &b
	}
	for _, o := range in.ModelOverrides {
		out.ModelOverrides = append(out.ModelOverrides, evals.ModelOverride{StepID: o.StepID, Credential: o.Credential, Model: o.Model, Params: o.Params})
	}
	for _, sc := range in.Scorers {
		x := evals.Scorer{Kind: string(sc.Kind), IgnorePaths: sc.IgnorePaths}
		if sc.Expression != nil {
			x.Expression = *sc.Expression
		}
		if sc.Path != nil {
			x.Path = *sc.Path
		}
		if sc.Tolerance != nil {
			x.Tolerance = *sc.Tolerance
		}
		if sc.Relative != nil {
			x.Relative = *sc.Relative
		}
		if sc.Credential != nil {
			x.Credential = *sc.Credential
		}
		if sc.Model != nil {
			x.Model = *sc.Model
		}
		if sc.Criteria != nil {
			x.Criteria = *sc.Criteria
		}
		if sc.MaxTokens != nil {
			x.MaxTokens = *sc.MaxTokens
		}
		out.Scorers = append(out.Scorers, x)
	}
	if d := in.Dataset; d != nil {
		out.Dataset = &evals.Dataset{RunIDs: d.RunIDs, Last: d.Last, Status: d.Status, From: d.From, To: d.To}
	}
	return out
}

// subscribeEvaluation streams one evaluation each time it changes
// (evaluationUpdated), starting with its current state, and ends after it
// finishes. Notices travel on the tenant's channel with the evaluation id
// where a run's would be (events.RedisPublisher.PublishIncident); each is
// read back from Postgres, so the subscriber sees the committed state.
func subscribeEvaluation(ctx context.Context, id string) (<-chan *ent.Evaluation, error) {
	op, v, err := liveSubscriber(ctx)
	if err != nil {
		return nil, err
	}
	load := func() (*ent.Evaluation, error) {
		var ev *ent.Evaluation
		err := store.InTenant(ctx, op.live.Client, func(ctx context.Context) error {
			var err error
			ev, err = ent.FromContext(ctx).Evaluation.Query().Where(evaluation.ID(id)).Only(ctx)
			return err
		})
		return ev, err
	}
	sub := op.live.Hub.SubscribeTenant(v.TenantID)
	first, err := load()
	if err != nil {
		sub.Close()
		if ent.IsNotFound(err) {
			return nil, fmt.Errorf("evaluation %s: %w", id, err)
		}
		return nil, err
	}
	out := make(chan *ent.Evaluation, 1)
	out <- first
	open := func(ev *ent.Evaluation) bool {
		return ev.Status == evaluation.StatusQueued || ev.Status == evaluation.StatusRunning
	}
	go func() {
		defer close(out)
		defer sub.Close()
		if !open(first) {
			return
		}
		lease := auth.LeaseFrom(ctx)
		for {
			var n *events.Notice
			select {
			case <-ctx.Done():
				return
			case <-lease.Done():
				op.credentialEnded(ctx)
				return
			case m, ok := <-sub.C():
				if !ok {
					op.endIfDropped(ctx, sub, -1)
					return
				}
				n = m
			}
			if !n.Resync && n.RunID != id {
				continue
			}
			ev, err := load()
			if err != nil {
				if ctx.Err() == nil {
					op.endWith(op.present(ctx, fmt.Errorf("load evaluation %s: %w", id, err)))
				}
				return
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
			if !open(ev) {
				return
			}
		}
	}()
	return out, nil
}
