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

// mapDefinition is one map step over n items whose inner step is a
// transform.
func mapDefinition(n int) map[string]any {
	return map[string]any{
		"schemaVersion": 1,
		"input":         map[string]any{"type": "object", "properties": map[string]any{"n": map[string]any{"type": "integer"}}},
		"steps": []any{map[string]any{"id": "each", "type": "map", "items": fmt.Sprintf("lists.range(%d)", n),
			"step": map[string]any{"type": "transform", "output": map[string]any{"i": "index", "sq": "item * item"}}}},
		"output": "size(steps.each.output)",
	}
}

// gatedDefinition parks a run on gates approvals in a row, then runs n
// chained transform steps once the last is approved: subscribers connect
// while it waits on the first, each decision is one commit whose events
// they receive, and the steps after the last are a burst of commits.
func gatedDefinition(gates, n int) map[string]any {
	var steps []any
	for g := 1; g <= gates; g++ {
		gate := map[string]any{"id": fmt.Sprintf("gate%d", g), "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "timeout": "1h"}
		if g > 1 {
			gate["needs"] = []any{fmt.Sprintf("gate%d", g-1)}
		}
		steps = append(steps, gate)
	}
	steps = append(steps, map[string]any{"id": "s1", "type": "transform", "needs": []any{fmt.Sprintf("gate%d", gates)}, "output": "'a'"})
	for i := 2; i <= n; i++ {
		steps = append(steps, map[string]any{
			"id": fmt.Sprintf("s%d", i), "type": "transform", "needs": []any{fmt.Sprintf("s%d", i-1)},
			"output": fmt.Sprintf("steps.s%d.output + 'a'", i-1),
		})
	}
	return map[string]any{"schemaVersion": 1, "steps": steps, "output": fmt.Sprintf("steps.s%d.output", n)}
}
