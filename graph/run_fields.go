// Helpers of the Run, StepRun and StepAttempt field resolvers: decoding
// stored JSON, the run error and the recorded calls of an attempt.
package graph

import (
	"bytes"
	"encoding/json"

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
			out = append(out, &sc)
		}
	}
	return out
}
