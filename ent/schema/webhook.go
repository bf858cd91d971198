package schema

import (
	"context"
	"errors"
	"fmt"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/dialect/entsql"
	"entgo.io/ent/schema"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"

	gen "github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/hook"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// WebhookEndpoint is a tenant's receiver of run events. Its signing secret
// is stored encrypted and shown once, at creation or rotation.
type WebhookEndpoint struct{ ent.Schema }

func (WebhookEndpoint) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WebhookEndpoint}, TenantMixin{}, TimeMixin{}}
}

func (WebhookEndpoint) Fields() []ent.Field {
	return []ent.Field{
		field.String("url").NotEmpty().MaxLen(2048),
		field.String("description").Optional().MaxLen(500),
		field.Strings("event_types").Optional().
			Comment("Event types delivered; empty means all."),
		field.Bool("enabled").Default(true),
		field.String("disabled_reason").Optional().Nillable(),
		field.Bytes("secret").Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Int("secret_version").Default(1).
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Bytes("previous_secret").Optional().Nillable().Sensitive().
			Annotations(entgql.Skip(entgql.SkipAll)),
		field.Time("previous_secret_expires_at").Optional().Nillable(),
		field.Time("failing_since").Optional().Nillable(),
		field.String("created_by").Immutable(),
	}
}

// Hooks: every change to an endpoint bumps its tenant's webhooks_version in
// the same transaction, whichever code path makes it. The outbox caches
// each tenant's enabled endpoints under that version (internal/webhook), so
// a change the version missed would leave a stale list in use.
func (WebhookEndpoint) Hooks() []ent.Hook {
	return []ent.Hook{bumpWebhooksVersion}
}

func bumpWebhooksVersion(next ent.Mutator) ent.Mutator {
	return hook.WebhookEndpointFunc(func(ctx context.Context, m *gen.WebhookEndpointMutation) (ent.Value, error) {
		v, err := next.Mutate(ctx, m)
		if err != nil {
			return v, err
		}
		vw := viewer.FromContext(ctx)
		if vw == nil || vw.TenantID == "" {
			return nil, errors.New("webhook endpoint changed without a tenant in context")
		}
		// Bookkeeping only Sluice writes: the tenant policy allows no
		// tenant mutation from a viewer; Row-Level Security still confines
		// the update to the viewer's tenant.
		err = m.Client().Tenant.Update().Where(tenant.ID(vw.TenantID)).AddWebhooksVersion(1).
			Exec(privacy.DecisionContext(ctx, privacy.Allow))
		if err != nil {
			return nil, fmt.Errorf("bump webhooks version: %w", err)
		}
		return v, nil
	})
}

func (WebhookEndpoint) Edges() []ent.Edge {
	return []ent.Edge{
		edge.From("deliveries", WebhookDelivery.Type).Ref("endpoint").
			Annotations(entgql.RelayConnection()),
	}
}

func (WebhookEndpoint) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}

// WebhookDelivery is one event to one endpoint. Its webhook id stays the
// same across retries and redeliveries, so receivers can deduplicate.
type WebhookDelivery struct{ ent.Schema }

func (WebhookDelivery) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WebhookDelivery}, TenantMixin{}, TimeMixin{}}
}

func (WebhookDelivery) Fields() []ent.Field {
	return []ent.Field{
		field.String("endpoint_id").Immutable(),
		field.String("webhook_id").Immutable().Unique(),
		field.String("event_type").Immutable(),
		field.String("run_id").Optional().Immutable(),
		field.Int64("seq").Optional().Immutable(),
		field.JSON("payload", map[string]any{}).Immutable().
			Annotations(entgql.Type("Map"), entgql.Skip(entgql.SkipWhereInput)),
		field.Enum("status").Values("pending", "delivered", "exhausted", "cancelled").Default("pending").
			Annotations(entgql.Type("WebhookDeliveryStatus")),
		field.Int("attempts").Default(0),
		field.Time("next_attempt_at").Optional().Nillable(),
		field.Int("last_status_code").Optional().Nillable(),
		field.String("last_error").Optional().Nillable(),
		field.Time("delivered_at").Optional().Nillable(),
	}
}

func (WebhookDelivery) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("endpoint", WebhookEndpoint.Type).Field("endpoint_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
		edge.From("attempt_list", WebhookAttempt.Type).Ref("delivery").
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (WebhookDelivery) Indexes() []ent.Index {
	return []ent.Index{
		index.Fields("tenant_id", "endpoint_id", "created_at"),
		index.Fields("status", "next_attempt_at"),
	}
}

func (WebhookDelivery) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.RelayConnection(), entgql.QueryField()}
}

// WebhookAttempt is one try of a delivery.
type WebhookAttempt struct{ ent.Schema }

func (WebhookAttempt) Mixin() []ent.Mixin {
	return []ent.Mixin{IDMixin{Prefix: ids.WebhookAttempt}, TenantMixin{}, CreatedMixin{}}
}

func (WebhookAttempt) Fields() []ent.Field {
	return []ent.Field{
		field.String("delivery_id").Immutable(),
		field.Int("number").Immutable(),
		field.Int("status_code").Optional().Nillable().Immutable(),
		field.Int64("latency_ms").Immutable(),
		field.String("error").Optional().Nillable().Immutable(),
		field.Time("next_attempt_at").Optional().Nillable().Immutable(),
	}
}

func (WebhookAttempt) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("delivery", WebhookDelivery.Type).Field("delivery_id").Unique().Required().Immutable().
			Annotations(entsql.OnDelete(entsql.Cascade)),
	}
}

func (WebhookAttempt) Indexes() []ent.Index {
	return []ent.Index{index.Fields("tenant_id", "delivery_id", "number").Unique()}
}

func (WebhookAttempt) Annotations() []schema.Annotation {
	return []schema.Annotation{entgql.Skip(entgql.SkipMutationCreateInput, entgql.SkipMutationUpdateInput, entgql.SkipWhereInput)}
}
