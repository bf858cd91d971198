package schema

import (
	"entgo.io/ent"

	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/authz"
)

func (TenantMixin) Policy() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{authz.FilterTenantRule(), authz.FilterRunChildrenRule()},
		Mutation: privacy.MutationPolicy{
			authz.AllowSystemMutation(),
			authz.DenyReadOnlyMutation(),
			authz.FilterTenantRule(),
			authz.ScopeRunChildrenMutationRule(),
		},
	}
}

func (Tenant) Policy() ent.Policy {
	return privacy.Policy{
		Query: privacy.QueryPolicy{authz.FilterOwnTenantRule()},
		Mutation: privacy.MutationPolicy{
			authz.AllowSystemMutation(),
			privacy.AlwaysDenyRule(),
		},
	}
}
