package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/concurrency"
	"github.com/sluicehq/sluice/internal/definition"
)

// concurrency is the resolver's per-environment concurrency service (a
// default one when the server set none: it holds nothing but a clock).
func (r *Resolver) concurrency() *concurrency.Service {
	if r.Concurrency != nil {
		return r.Concurrency
	}
	return concurrency.New(nil)
}

func concurrencySettingModel(c *definition.Concurrency) *model.ConcurrencySetting {
	if c == nil {
		return nil
	}
	m := &model.ConcurrencySetting{Limit: c.Limit, OnLimit: c.Mode()}
	if c.Key != "" {
		key := c.Key
		m.Key = &key
	}
	return m
}

func workflowConcurrencyModel(s *concurrency.Setting) *model.WorkflowConcurrencySetting {
	m := &model.WorkflowConcurrencySetting{WorkflowID: s.WorkflowID, EnvironmentID: s.EnvironmentID,
		Concurrency: concurrencySettingModel(s.Effective), Override: concurrencySettingModel(s.OverrideSetting())}
	if s.Source != "" {
		src := model.ConcurrencySource(s.Source)
		m.Source = &src
	}
	if o := s.Override; o != nil {
		by, at := o.UpdatedBy, o.UpdatedAt
		m.UpdatedBy, m.UpdatedAt = &by, &at
	}
	return m
}
