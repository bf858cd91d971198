// Helpers of the Run, StepRun and StepAttempt field resolvers: decoding
// stored JSON, the run error and the recorded calls of an attempt.
package graph

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/mapitem"
	"github.com/sluicehq/sluice/graph/model"
)

// decodeRaw decodes a stored output for the Any scalar, numbers kept as
// stored (json.Number): an int beyond 2^53 stays exact.
func decodeRaw(raw json.RawMessage) any {
	if len(raw) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil
	}
	return v
}

func runError(class, message, stepID *string) *model.RunError {
	if class == nil {
		return nil
	}
	e := &model.RunError{Class: *class, StepID: stepID}
	if message != nil {
		e.Message = *message
	}
	return e
}

func stepCalls(calls []map[string]any) []*model.StepCall {
	out := make([]*model.StepCall, 0, len(calls))
	for _, c := range calls {
		b, _ := json.Marshal(c)
		var sc model.StepCall
		if err := json.Unmarshal(b, &sc); err == nil {
			if sc.Cache != nil && (*sc.Cache == "hit" || *sc.Cache == "stale") {
				sc.DurationMs = nil // served from the response cache: no upstream duration
			}
			out = append(out, &sc)
		}
	}
	return out
}

// mapItemCounts counts a map step's items by status, through Ent (privacy
// and RLS apply); a map with no item rows (of transforms) has none.
func mapItemCounts(ctx context.Context, c *ent.Client, sr *ent.StepRun) (*model.MapItemCounts, error) {
	var rows []struct {
		Status mapitem.Status `json:"status"`
		Count  int            `json:"count"`
	}
	err := c.MapItem.Query().Where(mapitem.RunID(sr.RunID), mapitem.StepID(sr.StepID)).
		GroupBy(mapitem.FieldStatus).Aggregate(ent.Count()).Scan(ctx, &rows)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, nil
	}
	out := &model.MapItemCounts{}
	for _, r := range rows {
		out.Total += r.Count
		switch r.Status {
		case mapitem.StatusQueued:
			out.Queued = r.Count
		case mapitem.StatusRunning:
			out.Running = r.Count
		case mapitem.StatusSucceeded:
			out.Succeeded = r.Count
		case mapitem.StatusFailed:
			out.Failed = r.Count
		case mapitem.StatusCancelled:
			out.Cancelled = r.Count
		}
	}
	return out, nil
}
