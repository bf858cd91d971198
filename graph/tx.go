package graph

import (
	"context"
	"fmt"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// TenantTransaction runs each query and mutation in one transaction scoped to
// the viewer's tenant (RLS), with its Ent client in the context. A response
// with any error rolls back, so a failed mutation writes nothing.
// Subscriptions are long-lived and open their own short transactions.
type TenantTransaction struct {
	Client    *ent.Client
	Presenter graphql.ErrorPresenterFunc
}

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
	graphql.FieldInterceptor
} = TenantTransaction{}

// txLockKey holds the mutex that serialises the resolvers of one request.
type txLockKey struct{}

func (TenantTransaction) ExtensionName() string                   { return "TenantTransaction" }
func (TenantTransaction) Validate(graphql.ExecutableSchema) error { return nil }

func (t TenantTransaction) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	op := graphql.GetOperationContext(ctx)
	if op.Operation != nil && op.Operation.Operation == ast.Subscription {
		return next(ctx)
	}
	v := viewer.FromContext(ctx)
	if v == nil {
		return graphql.ErrorResponse(ctx, "authentication required")
	}
	tx, err := store.BeginTenant(ctx, t.Client, v.TenantID)
	if err != nil {
		return t.internalResponse(ctx, err)
	}
	txCtx := ent.NewContext(ent.NewTxContext(ctx, tx), tx.Client())
	txCtx = context.WithValue(txCtx, txLockKey{}, &sync.Mutex{})
	resp := next(txCtx)
	if resp == nil || len(resp.Errors) > 0 || op.Operation == nil || op.Operation.Operation != ast.Mutation {
		_ = tx.Rollback()
		return resp
	}
	if err := tx.Commit(); err != nil {
		return t.internalResponse(ctx, fmt.Errorf("commit: %w", err))
	}
	return resp
}

// InterceptField runs the resolvers of one request one at a time. gqlgen
// resolves sibling fields concurrently, but they all share the request's
// transaction, and a Postgres connection runs one statement at a time
// (concurrent use fails with "conn busy"). Resolvers read their rows fully
// before returning, so holding the lock around each call is enough.
func (TenantTransaction) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	mu, ok := ctx.Value(txLockKey{}).(*sync.Mutex)
	if fc := graphql.GetFieldContext(ctx); !ok || fc == nil || (!fc.IsResolver && !fc.IsMethod) {
		return next(ctx)
	}
	mu.Lock()
	defer mu.Unlock()
	return next(ctx)
}

func (t TenantTransaction) internalResponse(ctx context.Context, err error) *graphql.Response {
	return &graphql.Response{Errors: gqlerror.List{t.Presenter(ctx, err)}}
}
