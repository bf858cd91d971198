package runs

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/definition"
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
	tenant, err := s.c.Tenant.Get(ctx, s.run.TenantID)
	if err != nil {
		return nil, nil, err
	}
	if maxRun == nil && tenant.MonthlyBudgetMicroUsd == nil {
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
	if tenant.MonthlyBudgetMicroUsd != nil {
		spent, err := monthSpend(ctx, s.c, s.now)
		if err != nil {
			return nil, nil, err
		}
		if spent+estimate > *tenant.MonthlyBudgetMicroUsd {
			return &steps.Error{Class: steps.Budget, Message: fmt.Sprintf("the tenant has spent %s USD of its %s USD monthly budget; this call could cost up to %s USD", money.FormatUSD(spent), money.FormatUSD(*tenant.MonthlyBudgetMicroUsd), money.FormatUSD(estimate))},
				map[string]any{"scope": "tenant", "spentMicroUSD": spent, "limitMicroUSD": *tenant.MonthlyBudgetMicroUsd, "estimateMicroUSD": estimate}, nil
		}
	}
	return nil, nil, nil
}

// monthSpend sums the tenant's model cost in the calendar month (UTC) of now.
func monthSpend(ctx context.Context, c *ent.Client, now time.Time) (int64, error) {
	start := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	var rows []struct {
		Sum *int64 `json:"sum"`
	}
	err := c.ModelCall.Query().Where(modelcall.CreatedAtGTE(start)).
		Aggregate(ent.As(ent.Sum(modelcall.FieldCostMicroUsd), "sum")).Scan(ctx, &rows)
	if err != nil || len(rows) == 0 || rows[0].Sum == nil {
		return 0, err
	}
	return *rows[0].Sum, nil
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
		err := s.c.ModelCall.Create().
			SetRunID(s.run.ID).SetStepID(j.step.ID).SetAttemptID(j.attemptID).
			SetWorkflowID(s.run.WorkflowID).SetVersionID(s.run.VersionID).SetEnvironmentID(s.run.EnvironmentID).
			SetProvider(call.Provider).SetModel(call.Model).
			SetInputTokens(call.InputTokens).SetOutputTokens(call.OutputTokens).SetCachedInputTokens(call.CachedInputTokens).
			SetCostMicroUsd(cost).SetPriced(priced).SetLatencyMs(call.DurationMs).
			Exec(ctx)
		if err != nil {
			return 0, fmt.Errorf("record model call: %w", err)
		}
		m, prov, mod, in, out, cst := s.e.metrics, call.Provider, call.Model, call.InputTokens, call.OutputTokens, cost
		s.afterCommit = append(s.afterCommit, func() { m.modelCall(prov, mod, in, out, cst) })
	}
	if total > 0 {
		s.run.CostMicroUsd += total
		s.update.AddCostMicroUsd(total)
		s.dirty = true
	}
	return total, nil
}
