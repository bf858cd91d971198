package control

import (
	"context"
	"fmt"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/modelprice"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/llm"
	"github.com/sluicehq/sluice/internal/money"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// shipped is the price table Sluice ships (internal/llm).
var shipped = llm.Shipped()

// Prices returns the shipped price table with the tenant's overrides, as
// read through c.
func Prices(ctx context.Context, c *ent.Client) (*llm.Table, error) {
	overrides, err := c.ModelPrice.Query().All(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model prices: %w", err)
	}
	if len(overrides) == 0 {
		return shipped, nil
	}
	list := make([]llm.Price, len(overrides))
	for i, o := range overrides {
		list[i] = llm.Price{Provider: o.Provider, Model: o.Model, Input: o.InputMicroUsdPerMtok, CachedInput: o.CachedInputMicroUsdPerMtok, Output: o.OutputMicroUsdPerMtok}
	}
	return shipped.With(list), nil
}

// SetModelPrice overrides a model's price for the tenant. Admins only.
func (s *Service) SetModelPrice(ctx context.Context, provider, model string, inputUSD, outputUSD float64, cachedUSD *float64) (*ent.ModelPrice, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
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
		return nil, store.ConflictIfExists(err, "model price")
	}
	return mp, audit.Record(ctx, c, "model_price.set", "ModelPrice", mp.ID, map[string]any{"provider": provider, "model": model, "inputUSDPerMTok": inputUSD, "outputUSDPerMTok": outputUSD, "cachedInputUSDPerMTok": cached})
}

// DeleteModelPrice removes a tenant override; the shipped price applies again.
func (s *Service) DeleteModelPrice(ctx context.Context, id string) (string, error) {
	_, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
	if err != nil {
		return "", err
	}
	if err := c.ModelPrice.DeleteOneID(id).Exec(ctx); ent.IsNotFound(err) {
		return "", errs.NotFoundf("model price", id)
	} else if err != nil {
		return "", err
	}
	return id, audit.Record(ctx, c, "model_price.delete", "ModelPrice", id, nil)
}

// SetTenantBudget sets or clears the tenant's monthly model budget. Admins only.
func (s *Service) SetTenantBudget(ctx context.Context, monthlyUSD *float64) (*ent.Tenant, error) {
	v, c, err := access.AuthorizeTenantWide(ctx, viewer.RoleAdmin)
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
	return t, audit.Record(ctx, c, "tenant.set_budget", "Tenant", t.ID, meta)
}

// EffectivePrice is a model price with where it comes from.
type EffectivePrice struct {
	llm.Price
	Source string // SHIPPED or OVERRIDE
	AsOf   string
}

// EffectivePrices lists shipped prices with the tenant's overrides applied.
func (s *Service) EffectivePrices(ctx context.Context, c *ent.Client) ([]EffectivePrice, error) {
	overrides, err := c.ModelPrice.Query().All(ctx)
	if err != nil {
		return nil, err
	}
	over := map[string]bool{}
	for _, o := range overrides {
		over[o.Provider+"/"+o.Model] = true
	}
	table, err := Prices(ctx, c)
	if err != nil {
		return nil, err
	}
	var out []EffectivePrice
	for _, p := range table.All() {
		src := "SHIPPED"
		if over[p.Provider+"/"+p.Model] {
			src = "OVERRIDE"
		}
		out = append(out, EffectivePrice{Price: p, Source: src, AsOf: shipped.AsOf})
	}
	return out, nil
}
