package definition

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Workflow steps: a step that starts a run of another workflow (a child
// run) and outputs the child's output.

// MaxRunDepth is how deep runs nest: a run started otherwise has depth 1,
// a child run its parent's depth + 1, and no run deeper than this starts.
const MaxRunDepth = 5

// checkChildInput checks a workflow step's input: one expression, or an
// object whose string leaves are expressions (as a transform's output).
func (v *validator) checkChildInput(path string, raw json.RawMessage, scope exprScope) {
	var in any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&in); err != nil {
		v.add(path, "not valid JSON: %v", err)
		return
	}
	v.outputShape(path, in, scope)
}

// WorkflowRefs returns, for each workflow step of the definition, its
// index and the workflow it references, in definition order.
func (d *Definition) WorkflowRefs() []WorkflowRef {
	var out []WorkflowRef
	for i, s := range d.Steps {
		if s.Type == StepWorkflow && s.Workflow != "" {
			out = append(out, WorkflowRef{Index: i, Workflow: s.Workflow})
		}
	}
	return out
}

// WorkflowRef is a workflow step's reference to another workflow.
type WorkflowRef struct {
	Index    int
	Workflow string
}

// EvalChildInput evaluates a workflow step's input into the child run's
// input: an object whose string leaves are expressions, or one expression
// that must give an object. No input is an empty object.
func EvalChildInput(path string, raw json.RawMessage, env Env) (map[string]any, error) {
	if len(raw) == 0 {
		return map[string]any{}, nil
	}
	out, err := EvalOutput(path, raw, env)
	if err != nil {
		return nil, err
	}
	m, ok := out.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: the input must be an object, got %s", path, describe(out))
	}
	return m, nil
}

// EscalationRef is an approval step's escalation policy, by name.
type EscalationRef struct {
	Index  int // the step's index in steps
	Policy string
}

// LimitRef is a step's reference to a named concurrency limit.
type LimitRef struct {
	Index int    // the step's index in Steps
	Name  string // the limit's name
}

// LimitRefs lists the named concurrency limits the definition's steps
// name, in step order.
func (d *Definition) LimitRefs() []LimitRef {
	var out []LimitRef
	for i, s := range d.Steps {
		if s.Limit != "" {
			out = append(out, LimitRef{Index: i, Name: s.Limit})
		}
	}
	return out
}

// EscalationRefs lists the escalation policies the definition's approval
// steps name, in step order.
func (d *Definition) EscalationRefs() []EscalationRef {
	var out []EscalationRef
	for i, s := range d.Steps {
		if s.Type == StepApproval && s.Escalation != "" {
			out = append(out, EscalationRef{Index: i, Policy: s.Escalation})
		}
	}
	return out
}
