package definition

import (
	"encoding/json"
	"errors"
	"testing"
)

func workflowDoc(step map[string]any) []byte {
	steps := []any{map[string]any{"id": "prep", "type": "transform", "output": map[string]any{"n": "1"}}, step}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 1, "input": map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}, "steps": steps})
	return b
}

func TestParseWorkflowStep(t *testing.T) {
	d, err := Parse(workflowDoc(map[string]any{"id": "child", "type": "workflow", "needs": []any{"prep"}, "workflow": "wf_x",
		"input": map[string]any{"n": "steps.prep.output.n + 1", "name": "input.name", "fixed": 3}}))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.StepByID("child")
	if s.Workflow != "wf_x" || len(d.WorkflowRefs()) != 1 || d.WorkflowRefs()[0].Index != 1 {
		t.Errorf("step: %+v refs %v", s, d.WorkflowRefs())
	}
	in, err := EvalChildInput(s.Path()+".input", s.Input, Env{Input: map[string]any{"name": "ada"}, Steps: map[string]any{"prep": map[string]any{"output": map[string]any{"n": int64(1)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if in["n"] != int64(2) || in["name"] != "ada" {
		t.Errorf("input: %#v", in)
	}
	if _, err := Parse(workflowDoc(map[string]any{"id": "child", "type": "workflow", "workflow": "wf_x", "input": "{'a': input.name}"})); err != nil {
		t.Errorf("one expression: %v", err)
	}
	if _, err := EvalChildInput("$.x", json.RawMessage(`"'text'"`), Env{}); err == nil {
		t.Errorf("an input expression giving a string was accepted")
	}
}

func TestParseWorkflowStepRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		step map[string]any
		path string
	}{
		{"no workflow", map[string]any{"id": "w", "type": "workflow"}, "$.steps[1].workflow"},
		{"empty workflow", map[string]any{"id": "w", "type": "workflow", "workflow": ""}, "$.steps[1].workflow"},
		{"bad input expression", map[string]any{"id": "w", "type": "workflow", "workflow": "wf_x", "input": map[string]any{"a": "input.name * 2"}}, "$.steps[1].input.a"},
		{"input reads a step it does not need", map[string]any{"id": "w", "type": "workflow", "workflow": "wf_x", "input": map[string]any{"a": "steps.prep.output.n"}}, "$.steps[1].input.a"},
		{"input a number", map[string]any{"id": "w", "type": "workflow", "workflow": "wf_x", "input": 3}, "$.steps[1].input"},
		{"field of another type", map[string]any{"id": "w", "type": "workflow", "workflow": "wf_x", "duration": "1s"}, "$.steps[1].duration"},
		{"workflow on another type", map[string]any{"id": "w", "type": "delay", "duration": "1s", "workflow": "wf_x"}, "$.steps[1].workflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(workflowDoc(tc.step))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			found := false
			for _, p := range ve.Problems {
				if p.Path == tc.path {
					found = true
				}
			}
			if !found {
				t.Errorf("problems %+v, want one at %s", ve.Problems, tc.path)
			}
		})
	}
}
