package evals

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/evaluationexample"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/llm"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// A JUDGE scorer asks a model, through a credential of the evaluation's
// environment, which of the two outputs of an example is better. The two
// are shown as "A" and "B" in an order that alternates from example to
// example, starting on a side drawn from the evaluation's id, so a model's
// preference for the first (or second) answer cancels out over a dataset
// instead of deciding it. The call is made outside any transaction: the
// driver collects the examples to judge in its pass, calls the models
// after the pass commits, and records each answer on its example
// (evaluation_examples.judgements, written once); the next pass turns
// them into scores and the verdict. A worker that dies between the call
// and the record loses the answer, and the next pass asks again.

// DefaultJudgeCriteria is what a JUDGE scorer without criteria asks.
const DefaultJudgeCriteria = "Which answer better accomplishes the task: correct, complete, and no longer than needed?"

// judgeTimeout bounds one judge call.
const judgeTimeout = 2 * time.Minute

// judgeParallel bounds the judge calls the driver makes at once.
const judgeParallel = 8

// judgeSchema is the answer a judge must give.
var judgeSchema = json.RawMessage(`{"type":"object","required":["winner"],"properties":{"winner":{"type":"string","enum":["A","B","tie"]},"reason":{"type":"string"}}}`)

// Judgement is one JUDGE scorer's answer on one example, as stored.
type Judgement struct {
	Scorer         int    `json:"scorer"` // index in the evaluation's scorers
	CandidateFirst bool   `json:"candidateFirst"`
	Winner         string `json:"winner,omitempty"` // candidate | baseline | tie
	Reason         string `json:"reason,omitempty"`
	Error          string `json:"error,omitempty"`
	Model          string `json:"model"`
	CostMicroUSD   int64  `json:"costMicroUSD"`
}

// judgeTask is one example to judge.
type judgeTask struct {
	tenantID, environmentID string
	exampleID               string
	candidateFirst          bool
	baseline, candidate     any
	scorers                 map[int]Scorer
}

// candidateFirst says whether an example shows the candidate as "A".
func candidateFirst(evaluationID string, position int) bool {
	h := fnv.New32a()
	h.Write([]byte(evaluationID))
	return (position%2 == 0) != (h.Sum32()&1 == 1)
}

// judgeScorers returns the JUDGE scorers by index.
func judgeScorers(scorers []Scorer) map[int]Scorer {
	out := map[int]Scorer{}
	for i, sc := range scorers {
		if sc.Kind == ScorerJudge {
			out[i] = sc
		}
	}
	return out
}

// runJudges makes the judge calls of tasks, a few at a time, and records
// each example's answers in a transaction of its own.
func (s *Service) runJudges(ctx context.Context, tasks []judgeTask) {
	sem := make(chan struct{}, judgeParallel)
	var wg sync.WaitGroup
	for _, t := range tasks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.judgeExample(ctx, t); err != nil {
				s.log.Warn("evaluation judge", "example", t.exampleID, "error", err)
			}
		}()
	}
	wg.Wait()
}

// judgeExample asks every JUDGE scorer of one example and records the
// answers (once: a concurrent record wins).
func (s *Service) judgeExample(ctx context.Context, t judgeTask) error {
	vctx := viewer.SystemContext(ctx, t.tenantID)
	out := make([]Judgement, 0, len(t.scorers))
	for i, sc := range t.scorers {
		out = append(out, s.ask(vctx, t, i, sc))
	}
	return store.InTenant(vctx, s.o.Client, func(ctx context.Context) error {
		return ent.FromContext(ctx).EvaluationExample.Update().
			Where(evaluationexample.ID(t.exampleID), evaluationexample.JudgementsIsNil(), evaluationexample.StatusEQ(evaluationexample.StatusRunning)).
			SetJudgements(toMaps(out)).SetUpdatedAt(s.now()).Exec(ctx)
	})
}

// ask asks one JUDGE scorer about one example.
func (s *Service) ask(ctx context.Context, t judgeTask, index int, sc Scorer) Judgement {
	j := Judgement{Scorer: index, CandidateFirst: t.candidateFirst, Model: sc.Model}
	if s.o.Vault == nil || s.o.Models == nil {
		j.Error = "this process cannot call models"
		return j
	}
	var cred *steps.Credential
	err := store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		typ, secret, err := s.o.Vault.OpenCredential(ctx, ent.FromContext(ctx), t.environmentID, sc.Credential)
		if err != nil {
			return err
		}
		cred = &steps.Credential{Type: string(typ), Secret: secret}
		return nil
	})
	if err != nil {
		j.Error = "judge credential: " + err.Error()
		return j
	}
	first, second := t.baseline, t.candidate
	if t.candidateFirst {
		first, second = t.candidate, t.baseline
	}
	criteria := sc.Criteria
	if criteria == "" {
		criteria = DefaultJudgeCriteria
	}
	maxTokens := sc.MaxTokens
	if maxTokens == 0 {
		maxTokens = 300
	}
	step := &definition.Step{ID: "judge", Type: definition.StepLLM, Credential: sc.Credential, Model: sc.Model, MaxTokens: maxTokens,
		OutputSchema: judgeSchema,
		System:       "You compare two answers to the same task and say which is better. Judge the content only, not the order in which the answers are shown.",
		Messages: []definition.Message{{Role: "user", Content: "{{ input.criteria }}\n\nAnswer A:\n{{ input.a }}\n\nAnswer B:\n{{ input.b }}\n\n" +
			`Reply with JSON: {"winner": "A", "B" or "tie", "reason": "one sentence"}.`}}}
	env := definition.Env{Input: map[string]any{"criteria": criteria, "a": render(first), "b": render(second)}}
	cctx, cancel := context.WithTimeout(ctx, judgeTimeout)
	defer cancel()
	res, err := s.o.Models.LLM(cctx, steps.Request{RunID: t.exampleID, StepID: fmt.Sprintf("judge-%d", index), Attempt: 1, Step: step, Env: env, Credential: cred})
	if res != nil {
		for _, call := range res.Calls {
			j.CostMicroUSD += s.price(ctx, call)
		}
	}
	if err != nil {
		j.Error = "judge: " + err.Error()
		return j
	}
	ans, _ := res.Output["json"].(map[string]any)
	winner, _ := ans["winner"].(string)
	j.Reason, _ = ans["reason"].(string)
	switch {
	case winner == "tie":
		j.Winner = "tie"
	case (winner == "A") == t.candidateFirst && (winner == "A" || winner == "B"):
		j.Winner = "candidate"
	case winner == "A" || winner == "B":
		j.Winner = "baseline"
	default:
		j.Error = fmt.Sprintf("the judge answered %q", winner)
	}
	return j
}

// price is a judge call's cost in the tenant's price table.
func (s *Service) price(ctx context.Context, call steps.Call) int64 {
	if call.Kind != "llm" {
		return 0
	}
	var cost int64
	_ = store.InTenant(ctx, s.o.Client, func(ctx context.Context) error {
		table, err := control.Prices(ctx, ent.FromContext(ctx))
		if err != nil {
			return err
		}
		p, _ := table.Lookup(call.Provider, call.Model)
		cost = llm.Cost(p, llm.Usage{Input: call.InputTokens, CachedInput: call.CachedInputTokens, Output: call.OutputTokens})
		return nil
	})
	return cost
}

// render is an output as the judge reads it: JSON, or the string itself.
func render(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSpace(string(b))
}

// judgeScore turns a recorded judgement into a score: the candidate
// winning improves, a tie passes, the baseline winning regresses, and a
// judge that failed fails the example's scoring (ERROR).
func judgeScore(j *Judgement) Score {
	s := Score{Kind: ScorerJudge}
	if j == nil {
		s.Message = "no judgement recorded"
		return s
	}
	s.CostMicroUSD = j.CostMicroUSD
	side := "B"
	if j.CandidateFirst {
		side = "A"
	}
	switch j.Winner {
	case "candidate":
		s.Pass, s.Value = true, 1
	case "tie":
		s.Pass = true
	case "baseline":
		s.Value = -1
	}
	s.Message = fmt.Sprintf("%s (candidate shown as %s): %s", j.Winner, side, j.Reason)
	if j.Error != "" {
		s.Message, s.Error = j.Error, true
	}
	return s
}
