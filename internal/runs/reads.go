package runs

import (
	"context"
	"sort"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
)

// RunSteps returns a run's steps in definition order.
func RunSteps(ctx context.Context, c *ent.Client, r *ent.Run) ([]*ent.StepRun, error) {
	list, err := c.StepRun.Query().Where(steprun.RunID(r.ID)).All(ctx)
	if err != nil {
		return nil, err
	}
	order := map[string]int{}
	if wv, err := c.WorkflowVersion.Get(ctx, r.VersionID); err == nil {
		if steps, ok := wv.Definition["steps"].([]any); ok {
			for i, s := range steps {
				if m, ok := s.(map[string]any); ok {
					if id, ok := m["id"].(string); ok {
						order[id] = i
					}
				}
			}
		}
	}
	sort.SliceStable(list, func(i, j int) bool { return order[list[i].StepID] < order[list[j].StepID] })
	return list, nil
}

// maxEventsPage bounds one read of a run's events.
const maxEventsPage = 1000

// RunEvents returns a run's events after afterSeq, in order.
func RunEvents(ctx context.Context, c *ent.Client, runID string, afterSeq, first *int) ([]*ent.RunEvent, error) {
	q := c.RunEvent.Query().Where(runevent.RunID(runID)).Order(ent.Asc(runevent.FieldSeq))
	if afterSeq != nil {
		q.Where(runevent.SeqGT(int64(*afterSeq)))
	}
	n := maxEventsPage
	if first != nil && *first > 0 && *first < n {
		n = *first
	}
	return q.Limit(n).All(ctx)
}

// StepAttempts returns a step's attempts, oldest first.
func StepAttempts(ctx context.Context, c *ent.Client, stepRunID string) ([]*ent.StepAttempt, error) {
	return c.StepAttempt.Query().Where(stepattempt.StepRunID(stepRunID)).Order(ent.Asc(stepattempt.FieldNumber)).All(ctx)
}

// DeadLetterGroup is failed runs sharing a failure class.
type DeadLetterGroup struct {
	Class string
	Count int
	Runs  []*ent.Run
}

// DeadLetter groups failed runs by failure class, most frequent first, each
// with its most recent runs.
func DeadLetter(ctx context.Context, c *ent.Client, workflowID, environmentID *string, limit int) ([]DeadLetterGroup, error) {
	if limit <= 0 || limit > 100 {
		limit = 20
	}
	filter := func(q *ent.RunQuery) *ent.RunQuery {
		q.Where(run.StatusEQ(run.StatusFailed))
		if workflowID != nil {
			q.Where(run.WorkflowID(*workflowID))
		}
		if environmentID != nil {
			q.Where(run.EnvironmentID(*environmentID))
		}
		return q
	}
	var counts []struct {
		ErrorClass *string `json:"error_class"`
		Count      int     `json:"count"`
	}
	if err := filter(c.Run.Query()).GroupBy(run.FieldErrorClass).Aggregate(ent.Count()).Scan(ctx, &counts); err != nil {
		return nil, err
	}
	sort.Slice(counts, func(i, j int) bool { return counts[i].Count > counts[j].Count })
	out := make([]DeadLetterGroup, 0, len(counts))
	for _, g := range counts {
		class := "unknown"
		q := filter(c.Run.Query())
		if g.ErrorClass != nil {
			class = *g.ErrorClass
			q.Where(run.ErrorClass(class))
		} else {
			q.Where(run.ErrorClassIsNil())
		}
		runs, err := q.Order(ent.Desc(run.FieldCreatedAt)).Limit(limit).All(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, DeadLetterGroup{Class: class, Count: g.Count, Runs: runs})
	}
	return out, nil
}
