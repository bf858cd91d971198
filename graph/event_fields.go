package graph

import (
	"context"
	"maps"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/eventtype"
)

// eventData is a run event's data as the caller sees it: a wait step's
// step.waiting event gets the wait's callback URL, computed for callers
// who may send events (runs.CallbackPath) and never stored.
func (r *Resolver) eventData(ctx context.Context, ev *ent.RunEvent) (map[string]any, error) {
	if ev.Type != string(eventtype.StepWaiting) || ev.Data == nil {
		return ev.Data, nil
	}
	waitID, _ := ev.Data["waitID"].(string)
	if waitID == "" {
		return ev.Data, nil // a delay's
	}
	path, err := r.Runs.CallbackPath(ctx, waitID)
	if err != nil || path == "" {
		return ev.Data, err
	}
	data := maps.Clone(ev.Data)
	data["callbackURL"] = r.PublicURL + path
	return data, nil
}
