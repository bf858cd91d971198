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
)

// providerOf names the provider a credential type calls.
func providerOf(credType string) string {
	if credType == "anthropic" {
		return "anthropic"
	}
	return "openai"
}

// checkBudget refuses a model call that could take the run over its
// maxCostUSD or the tenant over its monthly budget. The call's cost is
// estimated from its prompt length (~4 characters a token) and maxTokens.
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
	outTokens := int64(step.MaxTokens)
	if outTokens == 0 {
		outTokens = 1024
	}
	estimate := llm.Cost(price, llm.Usage{Input: int64(math.Ceil(float64(chars) / 4)), Output: outTokens})
	if maxRun != nil {
		limit := money.FromUSD(*maxRun)
		if s.run.CostMicroUsd+estimate > limit {
			return &steps.Error{Class: steps.Budget, Message: fmt.Sprintf("the run has spent %s USD of its %s USD budget; this call could cost up to %s USD", money.FormatUSD(s.run.CostMicroUsd), money.FormatUSD(limit), money.FormatUSD(estimate))},
				map[string]any{"scope": "run", "spentMicroUSD": s.run.CostMicroUsd, "limitMicroUSD": limit, "estimateMicroUSD": estimate}, nil
		}
	}
	if monthly != nil {
		spent, err := monthSpend(ctx, s.run.TenantID, s.now)
		if err != nil {
			return nil, nil, err
		}
		if spent+estimate > *monthly {
			return &steps.Error{Class: steps.Budget, Message: fmt.Sprintf("the tenant has spent %s USD of its %s USD monthly budget; this call could cost up to %s USD", money.FormatUSD(spent), money.FormatUSD(*monthly), money.FormatUSD(estimate))},
				map[string]any{"scope": "tenant", "spentMicroUSD": spent, "limitMicroUSD": *monthly, "estimateMicroUSD": estimate}, nil
		}
	}
	return nil, nil, nil
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
