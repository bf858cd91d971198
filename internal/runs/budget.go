package runs

import (
	"context"
	"fmt"
	"math"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/llm"
	"github.com/sluicehq/sluice/internal/money"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
)

// providerOf names the provider a credential type calls.
func providerOf(credType string) string {
	if credType == "anthropic" {
		return "anthropic"
	}
	return "openai"
}

// checkBudget refuses a model call that could take the run over its
// maxCostUSD or the tenant over its monthly budget: an llm step's first
// call, in its claim. The call's cost is estimated from its prompt length
// (~4 characters a token) and maxTokens. The step's later calls (a
// correction, a fallback) are checked by callBudget.
func (s *runState) checkBudget(ctx context.Context, step *definition.Step, credType string) (*steps.Error, map[string]any, error) {
	maxRun := s.def.MaxCostUSD
	monthly, err := tenantBudget(ctx, s.run.TenantID)
	if err != nil {
		return nil, nil, err
	}
	if maxRun == nil && monthly == nil {
		return nil, nil, nil
	}
	table, err := control.Prices(ctx, s.c)
	if err != nil {
		return nil, nil, err
	}
	price, _ := table.Lookup(providerOf(credType), step.Model)
	chars := len(step.System)
	for _, m := range step.Messages {
		chars += len(m.Content)
	}
	estimate := callEstimate(price, chars, step.MaxTokens)
	var spent int64
	if monthly != nil {
		if spent, err = monthSpend(ctx, s.run.TenantID, s.now); err != nil {
			return nil, nil, err
		}
	}
	refusal, data := budgetRefusal(maxRun, s.run.CostMicroUsd, monthly, spent, estimate)
	return refusal, data, nil
}

// callEstimate is the worst case of a model call: its input at ~4
// characters a token, and maxTokens of output (1,024 when unset).
func callEstimate(price llm.Price, chars, maxTokens int) int64 {
	out := int64(maxTokens)
	if out == 0 {
		out = 1024
	}
	return llm.Cost(price, llm.Usage{Input: int64(math.Ceil(float64(chars) / 4)), Output: out})
}

// budgetRefusal judges a call that could cost estimate against the run's
// cap (maxRun USD, runSpent so far) and the tenant's monthly budget
// (monthly, monthSpent so far): a Budget error and the budget.exceeded
// event's data when it could pass one, nils otherwise.
func budgetRefusal(maxRun *float64, runSpent int64, monthly *int64, monthSpent, estimate int64) (*steps.Error, map[string]any) {
	if maxRun != nil {
		limit := money.FromUSD(*maxRun)
		if runSpent+estimate > limit {
			return &steps.Error{Class: steps.Budget, Message: fmt.Sprintf("the run has spent %s USD of its %s USD budget; this call could cost up to %s USD", money.FormatUSD(runSpent), money.FormatUSD(limit), money.FormatUSD(estimate))},
				map[string]any{"scope": "run", "spentMicroUSD": runSpent, "limitMicroUSD": limit, "estimateMicroUSD": estimate}
		}
	}
	if monthly != nil && monthSpent+estimate > *monthly {
		return &steps.Error{Class: steps.Budget, Message: fmt.Sprintf("the tenant has spent %s USD of its %s USD monthly budget; this call could cost up to %s USD", money.FormatUSD(monthSpent), money.FormatUSD(*monthly), money.FormatUSD(estimate))},
			map[string]any{"scope": "tenant", "spentMicroUSD": monthSpent, "limitMicroUSD": *monthly, "estimateMicroUSD": estimate}
	}
	return nil, nil
}

// callBudget is an llm attempt's steps.Request.BeforeModelCall: before
// each call after the first (which its claim checked), it checks the
// budgets again in a transaction of its own, counting the calls the
// attempt already made (not recorded until the attempt finishes) and
// estimating the next from the size of its request. A refusal sets the
// job's budget.exceeded data.
func (e *Service) callBudget(j *job) func(context.Context, steps.PlannedCall) error {
	return func(ctx context.Context, next steps.PlannedCall) error {
		if len(next.Made) == 0 {
			return nil
		}
		var refusal *steps.Error
		err := store.InTenant(ctx, e.client, func(ctx context.Context) error {
			monthly, err := tenantBudget(ctx, j.tenantID)
			if err != nil || (j.maxRunCost == nil && monthly == nil) {
				return err
			}
			table, err := control.Prices(ctx, ent.FromContext(ctx))
			if err != nil {
				return err
			}
			var made int64
			for _, c := range next.Made {
				price, _ := table.Lookup(c.Provider, c.Model)
				made += llm.Cost(price, llm.Usage{Input: c.InputTokens, CachedInput: c.CachedInputTokens, Output: c.OutputTokens})
			}
			price, _ := table.Lookup(next.Provider, next.Model)
			estimate := callEstimate(price, next.RequestBytes, next.MaxTokens)
			var spent int64
			if monthly != nil {
				if spent, err = monthSpend(ctx, j.tenantID, e.now()); err != nil {
					return err
				}
			}
			refusal, j.budgetData = budgetRefusal(j.maxRunCost, j.runCost+made, monthly, spent+made, estimate)
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			// The database is out of reach: the next attempt checks again.
			return &steps.Error{Class: steps.Transient, Message: "check budgets: " + err.Error()}
		}
		if refusal != nil {
			return refusal
		}
		return nil
	}
}

// priceCalls prices the model calls of an attempt, records them for cost
// reports and returns the attempt's cost. Each call map gains costMicroUSD
// and priced.
func (s *runState) priceCalls(ctx context.Context, j *job, calls []map[string]any, raw []steps.Call) (int64, error) {
	var total int64
	var table *llm.Table
	for i, call := range raw {
		if call.Kind != "llm" {
			continue
		}
		if table == nil {
			var err error
			if table, err = control.Prices(ctx, s.c); err != nil {
				return 0, err
			}
		}
		price, priced := table.Lookup(call.Provider, call.Model)
		cost := llm.Cost(price, llm.Usage{Input: call.InputTokens, CachedInput: call.CachedInputTokens, Output: call.OutputTokens})
		calls[i]["costMicroUSD"] = cost
		calls[i]["priced"] = priced
		total += cost
		err := insertModelCall(ctx, &ent.ModelCall{ID: ids.New(ids.ModelCall), TenantID: s.run.TenantID, CreatedAt: s.now,
			RunID: s.run.ID, StepID: j.step.ID, AttemptID: j.attemptID,
			WorkflowID: s.run.WorkflowID, VersionID: s.run.VersionID, EnvironmentID: s.run.EnvironmentID,
			Provider: call.Provider, Model: call.Model,
			InputTokens: call.InputTokens, OutputTokens: call.OutputTokens, CachedInputTokens: call.CachedInputTokens,
			CostMicroUsd: cost, Priced: priced, LatencyMs: call.DurationMs})
		if err != nil {
			return 0, fmt.Errorf("record model call: %w", err)
		}
		m, prov, mod, in, out, cst := s.e.metrics, call.Provider, call.Model, call.InputTokens, call.OutputTokens, cost
		s.afterCommit = append(s.afterCommit, func() { m.modelCall(prov, mod, in, out, cst) })
	}
	if total > 0 {
		// The in-memory run takes the addition at flush, with the row.
		s.update.AddCostMicroUsd(total)
		s.dirty = true
	}
	return total, nil
}
