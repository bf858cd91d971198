package graph

import (
	"slices"
	"strings"
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
		StepsHeld: int(r.StepsHeld), Held: heldCounts(r.Held),
	}
}

// heldCounts are a group's held steps by reason, in QueueReason order;
// a reason the API does not name yet is left out (stepsHeld counts it).
func heldCounts(in []control.HeldCount) []*model.QueueHeldCount {
	out := make([]*model.QueueHeldCount, 0, len(in))
	for _, h := range in {
		reason := model.QueueReason(strings.ToUpper(h.Reason))
		if !reason.IsValid() {
			continue
		}
		out = append(out, &model.QueueHeldCount{Reason: reason, Steps: int(h.Steps), OldestSince: h.OldestSince})
	}
	sortHeld(out)
	return out
}

// sortHeld orders held counts as the QueueReason enum lists the reasons.
func sortHeld(hs []*model.QueueHeldCount) {
	rank := func(r model.QueueReason) int { return slices.Index(model.AllQueueReason, r) }
	slices.SortFunc(hs, func(a, b *model.QueueHeldCount) int { return rank(a.Reason) - rank(b.Reason) })
}

// addHeld adds a group's held counts to the total's.
func addHeld(total *model.QueueStatsRow, g *model.QueueStatsRow) {
	total.StepsHeld += g.StepsHeld
	for _, h := range g.Held {
		i := slices.IndexFunc(total.Held, func(t *model.QueueHeldCount) bool { return t.Reason == h.Reason })
		if i < 0 {
			c := *h
			total.Held = append(total.Held, &c)
			continue
		}
		t := total.Held[i]
		t.Steps += h.Steps
		if h.OldestSince.Before(t.OldestSince) {
			t.OldestSince = h.OldestSince
		}
	}
	sortHeld(total.Held)
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
