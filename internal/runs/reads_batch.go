package runs

import (
	"context"
	"sort"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/ent/workflowversion"
)

// The batch reads below serve the GraphQL layer's loaders: one statement
// for the children of many parents instead of one per parent.

// StepsOfRuns returns the steps of each run, in definition order: one query
// for the steps and one for the versions that order them. Without
// withOutput the steps' outputs (up to megabytes each) are not read.
func StepsOfRuns(ctx context.Context, c *ent.Client, runs []*ent.Run, withOutput bool) (map[string][]*ent.StepRun, error) {
	out := make(map[string][]*ent.StepRun, len(runs))
	if len(runs) == 0 {
		return out, nil
	}
	runIDs := make([]string, 0, len(runs))
	versionOf := make(map[string]string, len(runs))
	var versionIDs []string
	seenVersion := map[string]bool{}
	for _, r := range runs {
		runIDs = append(runIDs, r.ID)
		out[r.ID] = nil
		versionOf[r.ID] = r.VersionID
		if !seenVersion[r.VersionID] {
			seenVersion[r.VersionID] = true
			versionIDs = append(versionIDs, r.VersionID)
		}
	}
	q := c.StepRun.Query().Where(steprun.RunIDIn(runIDs...))
	if !withOutput {
		cols := make([]string, 0, len(steprun.Columns))
		for _, col := range steprun.Columns {
			if col != steprun.FieldOutput {
				cols = append(cols, col)
			}
		}
		q.Select(cols...)
	}
	steps, err := q.All(ctx)
	if err != nil {
		return nil, err
	}
	versions, err := c.WorkflowVersion.Query().Where(workflowversion.IDIn(versionIDs...)).
		Select(workflowversion.FieldID, workflowversion.FieldDefinition).All(ctx)
	if err != nil {
		return nil, err
	}
	order := make(map[string]map[string]int, len(versions))
	for _, v := range versions {
		order[v.ID] = stepOrder(v.Definition)
	}
	for _, s := range steps {
		out[s.RunID] = append(out[s.RunID], s)
	}
	for runID, list := range out {
		o := order[versionOf[runID]]
		sort.SliceStable(list, func(i, j int) bool { return o[list[i].StepID] < o[list[j].StepID] })
	}
	return out, nil
}

// stepOrder maps each step id of a definition to its position.
func stepOrder(def map[string]any) map[string]int {
	order := map[string]int{}
	if steps, ok := def["steps"].([]any); ok {
		for i, s := range steps {
			if m, ok := s.(map[string]any); ok {
				if id, ok := m["id"].(string); ok {
					order[id] = i
				}
			}
		}
	}
	return order
}

// EventsOfRuns returns, for each run, at most n events after afterSeq in
// order. Event sequence numbers are gapless from 1 per run, so the page is
// the range (afterSeq, afterSeq+n]: one query for every run.
func EventsOfRuns(ctx context.Context, c *ent.Client, runIDs []string, afterSeq, n int) (map[string][]*ent.RunEvent, error) {
	out := make(map[string][]*ent.RunEvent, len(runIDs))
	if len(runIDs) == 0 || n <= 0 {
		return out, nil
	}
	list, err := c.RunEvent.Query().
		Where(runevent.RunIDIn(runIDs...), runevent.SeqGT(int64(afterSeq)), runevent.SeqLTE(int64(afterSeq)+int64(n))).
		Order(ent.Asc(runevent.FieldRunID), ent.Asc(runevent.FieldSeq)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range list {
		out[e.RunID] = append(out[e.RunID], e)
	}
	return out, nil
}

// AttemptsOfSteps returns each step run's attempts, oldest first.
func AttemptsOfSteps(ctx context.Context, c *ent.Client, stepRunIDs []string) (map[string][]*ent.StepAttempt, error) {
	out := make(map[string][]*ent.StepAttempt, len(stepRunIDs))
	if len(stepRunIDs) == 0 {
		return out, nil
	}
	list, err := c.StepAttempt.Query().Where(stepattempt.StepRunIDIn(stepRunIDs...)).
		Order(ent.Asc(stepattempt.FieldStepRunID), ent.Asc(stepattempt.FieldNumber)).All(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range list {
		out[a.StepRunID] = append(out[a.StepRunID], a)
	}
	return out, nil
}
