package bench

import "fmt"

// chainDefinition is n transform steps, each needing the one before: the
// steps do next to nothing, so a run's duration is the engine's overhead.
func chainDefinition(n int) map[string]any {
	list := []any{map[string]any{"id": "s1", "type": "transform", "output": map[string]any{"v": "input.n"}}}
	for i := 2; i <= n; i++ {
		list = append(list, map[string]any{
			"id": fmt.Sprintf("s%d", i), "type": "transform", "needs": []any{fmt.Sprintf("s%d", i-1)},
			"output": map[string]any{"v": fmt.Sprintf("steps.s%d.output.v", i-1)},
		})
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps":         list,
		"output":        fmt.Sprintf("steps.s%d.output.v", n),
	}
}

// fanOutDefinition is n independent transform steps: all are ready at once.
func fanOutDefinition(n int) map[string]any {
	list := make([]any, 0, n)
	for i := 1; i <= n; i++ {
		list = append(list, map[string]any{"id": fmt.Sprintf("p%d", i), "type": "transform", "output": "input.n"})
	}
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps":         list,
		"output":        "steps.p1.output",
	}
}

// gatedDefinition parks a run on an approval, then runs n transform steps
// once it is approved: subscribers connect while it waits, and the events
// after the approval are the live ones measured.
func gatedDefinition(n int) map[string]any {
	steps := []any{
		map[string]any{"id": "gate", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": "1h"},
		map[string]any{"id": "s1", "type": "transform", "needs": []any{"gate"}, "output": "'a'"},
	}
	for i := 2; i <= n; i++ {
		steps = append(steps, map[string]any{
			"id": fmt.Sprintf("s%d", i), "type": "transform", "needs": []any{fmt.Sprintf("s%d", i-1)},
			"output": fmt.Sprintf("steps.s%d.output + 'a'", i-1),
		})
	}
	return map[string]any{"schemaVersion": 1, "steps": steps, "output": fmt.Sprintf("steps.s%d.output", n)}
}
