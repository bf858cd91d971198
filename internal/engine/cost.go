package engine

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/ent/modelprice"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/llm"
	"github.com/sluicehq/sluice/internal/money"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/viewer"
)

// prices returns the shipped price table with the tenant's overrides.
func (e *Engine) prices(ctx context.Context, c *ent.Client) (*llm.Table, error) {
	overrides, err := c.ModelPrice.Query().All(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model prices: %w", err)
	}
	if len(overrides) == 0 {
		return e.shipped, nil
	}
	list := make([]llm.Price, len(overrides))
	for i, o := range overrides {
		list[i] = llm.Price{Provider: o.Provider, Model: o.Model, Input: o.InputMicroUsdPerMtok, CachedInput: o.CachedInputMicroUsdPerMtok, Output: o.OutputMicroUsdPerMtok}
	}
	return e.shipped.With(list), nil
}

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
	table, err := s.e.prices(ctx, s.c)
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
			if table, err = s.e.prices(ctx, s.c); err != nil {
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

// SetModelPrice overrides a model's price for the tenant. Admins only.
func (e *Engine) SetModelPrice(ctx context.Context, provider, model string, inputUSD, outputUSD float64, cachedUSD *float64) (*ent.ModelPrice, error) {
	_, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if provider != "openai" && provider != "anthropic" {
		return nil, errs.Invalid("input.provider", "must be openai or anthropic")
	}
	if model = strings.TrimSpace(model); model == "" || len(model) > 200 {
		return nil, errs.Invalid("input.model", "must be 1 to 200 characters")
	}
	for path, v := range map[string]float64{"input.inputUSDPerMTok": inputUSD, "input.outputUSDPerMTok": outputUSD} {
		if v < 0 || v > 10_000 {
			return nil, errs.Invalid(path, "must be between 0 and 10000")
		}
	}
	cached := inputUSD
	if cachedUSD != nil {
		if *cachedUSD < 0 || *cachedUSD > 10_000 {
			return nil, errs.Invalid("input.cachedInputUSDPerMTok", "must be between 0 and 10000")
		}
		cached = *cachedUSD
	}
	existing, err := c.ModelPrice.Query().Where(modelprice.Provider(provider), modelprice.Model(model)).Only(ctx)
	var mp *ent.ModelPrice
	switch {
	case ent.IsNotFound(err):
		mp, err = c.ModelPrice.Create().SetProvider(provider).SetModel(model).
			SetInputMicroUsdPerMtok(money.FromUSD(inputUSD)).SetOutputMicroUsdPerMtok(money.FromUSD(outputUSD)).SetCachedInputMicroUsdPerMtok(money.FromUSD(cached)).
			Save(ctx)
	case err == nil:
		mp, err = existing.Update().
			SetInputMicroUsdPerMtok(money.FromUSD(inputUSD)).SetOutputMicroUsdPerMtok(money.FromUSD(outputUSD)).SetCachedInputMicroUsdPerMtok(money.FromUSD(cached)).
			Save(ctx)
	}
	if err != nil {
		return nil, dbError(err, "model price")
	}
	return mp, audit(ctx, c, "model_price.set", "ModelPrice", mp.ID, map[string]any{"provider": provider, "model": model, "inputUSDPerMTok": inputUSD, "outputUSDPerMTok": outputUSD, "cachedInputUSDPerMTok": cached})
}

// DeleteModelPrice removes a tenant override; the shipped price applies again.
func (e *Engine) DeleteModelPrice(ctx context.Context, id string) (string, error) {
	_, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.ModelPrice.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("model price", id)
	} else if err != nil {
		return "", err
	}
	return id, audit(ctx, c, "model_price.delete", "ModelPrice", id, nil)
}

// SetTenantBudget sets or clears the tenant's monthly model budget. Admins only.
func (e *Engine) SetTenantBudget(ctx context.Context, monthlyUSD *float64) (*ent.Tenant, error) {
	v, c, err := authorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return nil, err
	}
	u := c.Tenant.UpdateOneID(v.TenantID)
	meta := map[string]any{"monthlyUSD": nil}
	if monthlyUSD != nil {
		if *monthlyUSD < 0 || *monthlyUSD > 1e9 {
			return nil, errs.Invalid("input.monthlyUSD", "must be between 0 and 1000000000")
		}
		u.SetMonthlyBudgetMicroUsd(money.FromUSD(*monthlyUSD))
		meta["monthlyUSD"] = *monthlyUSD
	} else {
		u.ClearMonthlyBudgetMicroUsd()
	}
	// The tenants row is updated by the tenant's own admin through the app
	// role, which may update only its own row (RLS).
	t, err := u.Save(viewer.SystemContext(ctx, v.TenantID))
	if err != nil {
		return nil, err
	}
	return t, audit(ctx, c, "tenant.set_budget", "Tenant", t.ID, meta)
}

// EffectivePrice is a model price with where it comes from.
type EffectivePrice struct {
	llm.Price
	Source string // SHIPPED or OVERRIDE
	AsOf   string
}

// EffectivePrices lists shipped prices with the tenant's overrides applied.
func (e *Engine) EffectivePrices(ctx context.Context, c *ent.Client) ([]EffectivePrice, error) {
	overrides, err := c.ModelPrice.Query().All(ctx)
	if err != nil {
		return nil, err
	}
	over := map[string]bool{}
	for _, o := range overrides {
		over[o.Provider+"/"+o.Model] = true
	}
	table, err := e.prices(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []EffectivePrice
	for _, p := range table.All() {
		src := "SHIPPED"
		if over[p.Provider+"/"+p.Model] {
			src = "OVERRIDE"
		}
		out = append(out, EffectivePrice{Price: p, Source: src, AsOf: e.shipped.AsOf})
	}
	return out, nil
}
