package evals

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/runs"
)

// subjectPrefix marks the runs an evaluation starts: their created_by is
// subjectPrefix + the evaluation's id, so the planner knows them without
// a read.
const subjectPrefix = "evaluation:"

// plan is what an evaluation's replays need to know, read once.
type plan struct {
	overrides    []ModelOverride
	recordedOnly bool
}

func (s *Service) planOf(ctx context.Context, c *ent.Client, id string) (*plan, error) {
	if p, ok := s.plans.Load(id); ok {
		return p.(*plan), nil
	}
	ev, err := c.Evaluation.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	p := &plan{recordedOnly: ev.RecordedOnly}
	if err := fromMap(ev.ModelOverrides, &p.overrides); err != nil {
		return nil, err
	}
	s.plans.Store(id, p)
	return p, nil
}

// StepPlan implements runs.SandboxPlanner: an evaluation's replay runs its
// llm steps with the evaluation's model overrides and, when it is
// recordedOnly, answers its http (without sideEffect) and llm steps from the
// source run's recording, as long as the recording holds that very call.
func (s *Service) StepPlan(ctx context.Context, c *ent.Client, r *ent.Run, step *definition.Step) (*runs.SandboxStep, error) {
	id, ok := strings.CutPrefix(r.CreatedBy, subjectPrefix)
	if !ok {
		return nil, nil // a sandbox replay of an operator's: as defined
	}
	p, err := s.planOf(ctx, c, id)
	if err != nil {
		return nil, err
	}
	out := &runs.SandboxStep{}
	eff := step
	if step.Type == definition.StepLLM {
		eff = applyOverrides(step, p.overrides)
		if eff != step {
			out.Step = eff
		}
	}
	if !p.recordedOnly {
		return out, nil
	}
	out.FromRecording = true
	if r.ReplayOf == nil {
		out.Unrecorded = "the run replays no recorded run"
		return out, nil
	}
	src, err := c.Run.Get(ctx, *r.ReplayOf)
	if err != nil {
		return nil, fmt.Errorf("source run: %w", err)
	}
	def, err := s.o.Runs.DefinitionOf(ctx, c, src.VersionID)
	if err != nil {
		return nil, err
	}
	rec, ok := def.StepByID(step.ID)
	switch {
	case !ok || rec.Type != step.Type:
		out.Unrecorded = fmt.Sprintf("the recording has no %s step %q", step.Type, step.ID)
	case step.Type == definition.StepLLM && (rec.Model != eff.Model || rec.Credential != eff.Credential || !sameCall(rec, eff)):
		out.Unrecorded = fmt.Sprintf("step %q calls %s through %q; the recording holds %s through %q", step.ID, eff.Model, eff.Credential, rec.Model, rec.Credential)
	case step.Type == definition.StepHTTP && !sameCall(rec, eff):
		out.Unrecorded = fmt.Sprintf("step %q sends another request than the recorded one", step.ID)
	}
	return out, nil
}

// sameCall compares what a step sends (its request or its messages and
// parameters), as defined.
func sameCall(a, b *definition.Step) bool {
	ka, kb := *a, *b
	ka.Needs, kb.Needs, ka.If, kb.If = nil, nil, "", ""
	ka.Retry, kb.Retry, ka.Timeout, kb.Timeout = nil, nil, definition.Duration{}, definition.Duration{}
	ja, _ := json.Marshal(ka)
	jb, _ := json.Marshal(kb)
	var ma, mb any
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	return reflect.DeepEqual(ma, mb)
}

// applyOverrides returns step with the overrides that name it (or "*")
// applied, in order; step itself when none does.
func applyOverrides(step *definition.Step, list []ModelOverride) *definition.Step {
	var cp *definition.Step
	for _, o := range list {
		if o.StepID != "*" && o.StepID != step.ID {
			continue
		}
		if cp == nil {
			c := *step
			cp = &c
		}
		if o.Credential != nil {
			cp.Credential = *o.Credential
			cp.Fallbacks = nil // they belong to the replaced provider
		}
		if o.Model != nil {
			cp.Model = *o.Model
			cp.Fallbacks = nil
		}
		for k, v := range o.Params {
			f, _ := number(v)
			switch k {
			case "maxTokens":
				cp.MaxTokens = int(f)
			case "temperature":
				cp.Temperature = &f
			case "topP":
				cp.TopP = &f
			case "seed":
				n := int64(f)
				cp.Seed = &n
			}
		}
	}
	if cp == nil {
		return step
	}
	return cp
}
