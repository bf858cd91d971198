package schema

import (
	"context"
	"fmt"
	"time"

	"entgo.io/contrib/entgql"
	"entgo.io/ent"
	"entgo.io/ent/schema/edge"
	"entgo.io/ent/schema/field"
	"entgo.io/ent/schema/index"
	"entgo.io/ent/schema/mixin"

	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/viewer"
)

// IDMixin gives a type a prefixed, time-sortable string id (see internal/ids).
type IDMixin struct {
	mixin.Schema
	Prefix string
}

func (m IDMixin) Fields() []ent.Field {
	return []ent.Field{
		field.String("id").
			Immutable().
			NotEmpty().
			MaxLen(40).
			DefaultFunc(func() string { return ids.New(m.Prefix) }),
	}
}

// TimeMixin records creation and last update.
type TimeMixin struct{ mixin.Schema }

func (TimeMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").Immutable().Default(now).
			Annotations(entgql.OrderField("CREATED_AT")),
		field.Time("updated_at").Default(now).UpdateDefault(now),
	}
}

// CreatedMixin records creation only, for append-only tables.
type CreatedMixin struct{ mixin.Schema }

func (CreatedMixin) Fields() []ent.Field {
	return []ent.Field{
		field.Time("created_at").Immutable().Default(now).
			Annotations(entgql.OrderField("CREATED_AT")),
	}
}

func now() time.Time { return time.Now().UTC() }

// TenantMixin marks a table as tenant-owned: a tenant_id column set from the
// viewer (never from input), an index led by it, and the privacy filter that
// confines every query and mutation to the viewer's tenant.
type TenantMixin struct {
	mixin.Schema
	// LedByOwnIndexes: the schema's own indexes all lead with tenant_id, so
	// the mixin adds none. On the tables the engine writes for every step,
	// one index less is one index write less per row change.
	LedByOwnIndexes bool
}

func (TenantMixin) Fields() []ent.Field {
	return []ent.Field{
		field.String("tenant_id").Immutable().NotEmpty().
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (TenantMixin) Edges() []ent.Edge {
	return []ent.Edge{
		edge.To("tenant", Tenant.Type).Field("tenant_id").Unique().Required().Immutable().
			Annotations(entgql.Skip(entgql.SkipAll)),
	}
}

func (m TenantMixin) Indexes() []ent.Index {
	if m.LedByOwnIndexes {
		return nil
	}
	return []ent.Index{index.Fields("tenant_id")}
}

func (TenantMixin) Hooks() []ent.Hook {
	return []ent.Hook{setTenantOnCreate}
}

// setTenantOnCreate stamps the viewer's tenant on every new row, and refuses a
// row that names another tenant.
func setTenantOnCreate(next ent.Mutator) ent.Mutator {
	return ent.MutateFunc(func(ctx context.Context, m ent.Mutation) (ent.Value, error) {
		if !m.Op().Is(ent.OpCreate) {
			return next.Mutate(ctx, m)
		}
		v := viewer.FromContext(ctx)
		if v == nil || v.TenantID == "" {
			return nil, fmt.Errorf("create %s: no tenant in context", m.Type())
		}
		if cur, ok := m.Field("tenant_id"); ok && cur.(string) != v.TenantID {
			return nil, fmt.Errorf("create %s: tenant mismatch", m.Type())
		}
		if err := m.SetField("tenant_id", v.TenantID); err != nil {
			return nil, err
		}
		return next.Mutate(ctx, m)
	})
}
