package graph

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/requestid"
)

// Page sizes of every list argument named first or last (connections and
// Run.events): a larger value is clamped to MaxPageSize, so no page holds
// more (connections say hasNextPage); a connection asked for neither gets
// DefaultPageSize items, Run.events MaxPageSize.
const (
	MaxPageSize     = 200
	DefaultPageSize = 100
)

// mutationCost is the cost of each mutation field on top of its selection:
// a write (one transaction, an audit entry, perhaps webhooks), so a request
// can hold at most a couple of hundred.
const mutationCost = 2000

// defaultPage is the page of a list asked for neither first nor last.
func defaultPage(typeName, field string) int {
	if typeName == "Run" && field == "events" {
		return MaxPageSize
	}
	return DefaultPageSize
}

// RequestLimits bounds the work of one query or mutation:
//   - its response: once the values resolved exceed MaxResponseBytes, no
//     further field runs and the answer is one VALIDATION error (reason
//     RESPONSE_TOO_LARGE) instead of the data;
//   - a client that disconnects: the context is cancelled (statements in
//     flight stop), no further field runs, and the cancellation is logged
//     once rather than once per resolver;
//   - first and last are clamped to MaxPageSize, and lists asked for
//     neither get their default page;
//   - child lists (Run.steps, Run.events, StepRun.attemptList and calls,
//     WebhookDelivery.attemptList) load in one query per level through the
//     request's loader (see loaders.go).
type RequestLimits struct {
	MaxResponseBytes int64
	Log              *slog.Logger
}

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
	graphql.FieldInterceptor
} = RequestLimits{}

func (RequestLimits) ExtensionName() string                   { return "RequestLimits" }
func (RequestLimits) Validate(graphql.ExecutableSchema) error { return nil }

// requestState is what RequestLimits keeps per operation.
type requestState struct {
	max      int64
	bytes    atomic.Int64
	exceeded atomic.Bool
	cancel   context.CancelFunc
	// loader is replaced at each mutation field: mutations run one after
	// the other and may change what an earlier one's children read.
	loader atomic.Pointer[loader]
}

type requestStateKey struct{}

// errResponseTooLarge and errRequestCancelled end every field resolved after
// the limit is reached; the response carries neither (see InterceptResponse).
var (
	errResponseTooLarge = errs.E(errs.Validation, "response too large")
	errRequestCancelled = errs.E(errs.Unavailable, "request cancelled")
)

func (l RequestLimits) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	op := graphql.GetOperationContext(ctx)
	if op.Operation == nil || op.Operation.Operation == ast.Subscription {
		return next(ctx)
	}
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st := &requestState{max: l.MaxResponseBytes, cancel: cancel}
	st.loader.Store(newLoader())
	resp := next(context.WithValue(ctx, requestStateKey{}, st))
	if st.exceeded.Load() {
		return &graphql.Response{Errors: gqlerror.List{{
			Message: "the response would be larger than " + itoa(st.max) + " bytes: ask for fewer items (first, last) or fields",
			Extensions: map[string]any{"code": string(errs.Validation), "reason": "RESPONSE_TOO_LARGE",
				"maxResponseBytes": st.max},
		}}}
	}
	if ctx.Err() != nil {
		// The client went away: the request's context ended.
		l.Log.InfoContext(ctx, "request cancelled by the client", "request_id", requestid.FromContext(ctx),
			"operation", op.OperationName, "after_ms", time.Since(start).Milliseconds())
		return &graphql.Response{Errors: gqlerror.List{{Message: "request cancelled",
			Extensions: map[string]any{"code": string(errs.Unavailable), "reason": "CANCELLED"}}}}
	}
	return resp
}

func (l RequestLimits) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	st, ok := ctx.Value(requestStateKey{}).(*requestState)
	if !ok {
		return next(ctx)
	}
	if st.exceeded.Load() {
		return nil, errResponseTooLarge
	}
	if ctx.Err() != nil {
		return nil, errRequestCancelled
	}
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return next(ctx)
	}
	if fc.Args != nil {
		pageArgs(fc)
	}
	if fc.Object == "Mutation" {
		st.loader.Store(newLoader())
	}
	res, err := next(ctx)
	if err != nil {
		return res, err
	}
	st.loader.Load().register(res)
	size := int64(len(fc.Field.Alias)+4) + valueSize(res)
	if st.max > 0 && st.bytes.Add(size) > st.max {
		st.exceeded.Store(true)
		st.cancel()
		return nil, errResponseTooLarge
	}
	return res, nil
}

// pageArgs clamps first and last to MaxPageSize and gives a list asked for
// neither its default page, before the resolver reads them.
func pageArgs(fc *graphql.FieldContext) {
	if _, has := fc.Args["first"]; !has {
		return
	}
	first, _ := fc.Args["first"].(*int)
	last, _ := fc.Args["last"].(*int)
	for _, p := range []*int{first, last} {
		if p != nil && *p > MaxPageSize {
			*p = MaxPageSize
		}
	}
	if first == nil && last == nil {
		n := defaultPage(fc.Object, fc.Field.Name)
		fc.Args["first"] = &n
	}
}

// valueSize estimates the JSON size of a resolved value. Objects count
// nothing here: their fields are counted as they resolve.
func valueSize(v any) int64 {
	switch x := v.(type) {
	case nil:
		return 4
	case string:
		return int64(len(x)) + 2
	case *string:
		if x == nil {
			return 4
		}
		return int64(len(*x)) + 2
	case []byte:
		return int64(len(x))
	case json.RawMessage:
		return int64(len(x))
	case []string:
		var n int64 = 2
		for _, s := range x {
			n += int64(len(s)) + 3
		}
		return n
	case map[string]any:
		var n int64 = 2
		for k, e := range x {
			n += int64(len(k)) + 4 + valueSize(e)
		}
		return n
	case []any:
		var n int64 = 2
		for _, e := range x {
			n += valueSize(e) + 1
		}
		return n
	case []map[string]any:
		var n int64 = 2
		for _, e := range x {
			n += valueSize(e) + 1
		}
		return n
	}
	return 8
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// loaderFor returns the request's loader, or a fresh one outside
// RequestLimits (subscriptions, tests).
func loaderFor(ctx context.Context) *loader {
	if st, ok := ctx.Value(requestStateKey{}).(*requestState); ok {
		return st.loader.Load()
	}
	return newLoader()
}
