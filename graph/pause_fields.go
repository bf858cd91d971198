package graph

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/graph/model"
)

// pauseModel is a workflow's pause as GraphQL shows it, with its
// environment.
func pauseModel(ctx context.Context, p *ent.WorkflowPause) (*model.Pause, error) {
	env, err := ent.FromContext(ctx).Environment.Get(ctx, p.EnvironmentID)
	if err != nil {
		return nil, err
	}
	return &model.Pause{WorkflowID: p.WorkflowID, EnvironmentID: p.EnvironmentID, Environment: env, Mode: model.PauseMode(p.Mode),
		Reason: p.Reason, PausedBy: p.PausedBy, PausedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}, nil
}
