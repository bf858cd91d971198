package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/connections"
)

// connectionModel is a connection's metadata as GraphQL shows it.
func connectionModel(i *connections.Info) *model.OAuthConnection {
	m := &model.OAuthConnection{Status: i.Status, Grant: i.Grant, Scopes: i.Scopes, GrantedScopes: i.GrantedScopes,
		Account: i.Account, ExpiresAt: i.ExpiresAt, LastRefreshedAt: i.LastRefreshedAt, NextRefreshAt: i.NextRefreshAt,
		ConsecutiveFailures: i.ConsecutiveFailures, LastError: i.LastError}
	if i.Provider != "" {
		m.Provider = &i.Provider
	}
	if m.Scopes == nil {
		m.Scopes = []string{}
	}
	if m.GrantedScopes == nil {
		m.GrantedScopes = []string{}
	}
	return m
}
