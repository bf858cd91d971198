package graph

import (
	"time"

	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/control"
)

// queueStatsRow is one backlog group as GraphQL shows it, its ages at at.
func queueStatsRow(r control.BacklogRow, at time.Time) *model.QueueStatsRow {
	wf, env := r.WorkflowID, r.EnvironmentID
	return &model.QueueStatsRow{
		WorkflowID: &wf, EnvironmentID: &env,
		RunsQueued: int(r.RunsQueued), RunsRunning: int(r.RunsRunning), RunsWaiting: int(r.RunsWaiting),
		StepsReady: int(r.StepsReady), OldestReadyStepAt: r.OldestReadyAt, OldestReadyStepAgeSeconds: age(at, r.OldestReadyAt),
		ApprovalsOpen: int(r.ApprovalsOpen), OldestApprovalAt: r.OldestApprovalAt, OldestApprovalAgeSeconds: age(at, r.OldestApprovalAt),
	}
}

// age is the seconds from t to at, or 0 without t.
func age(at time.Time, t *time.Time) float64 {
	if t == nil || t.After(at) {
		return 0
	}
	return at.Sub(*t).Seconds()
}

// deref is *s, or "" for nil.
func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
