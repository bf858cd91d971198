package graph

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// TestRequestLimitsClientGone: once the client's context ends, no further
// field resolves (so no statement starts) and the cancellation is logged
// once for the request, not once per field.
func TestRequestLimitsClientGone(t *testing.T) {
	var logs bytes.Buffer
	l := RequestLimits{MaxResponseBytes: 1 << 20, Log: slog.New(slog.NewJSONHandler(&logs, nil))}
	client, disconnect := context.WithCancel(context.Background())
	ctx := graphql.WithOperationContext(client, &graphql.OperationContext{
		Operation: &ast.OperationDefinition{Operation: ast.Query}})
	ran := 0
	resp := l.InterceptResponse(ctx, func(ctx context.Context) *graphql.Response {
		field := func() (any, error) {
			fctx := graphql.WithFieldContext(ctx, &graphql.FieldContext{Field: graphql.CollectedField{Field: &ast.Field{Alias: "id"}}})
			return l.InterceptField(fctx, func(context.Context) (any, error) { ran++; return "x", nil })
		}
		if _, err := field(); err != nil {
			t.Fatalf("before the disconnect: %v", err)
		}
		disconnect()
		for range 100 {
			if _, err := field(); err == nil {
				t.Fatal("a field resolved after the client went away")
			}
		}
		return &graphql.Response{}
	})
	if ran != 1 {
		t.Errorf("%d resolvers ran, want 1", ran)
	}
	if n := strings.Count(logs.String(), "request cancelled by the client"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs.String())
	}
	if len(resp.Errors) != 1 {
		t.Errorf("want one error, got %v", resp.Errors)
	}
}

// TestRequestLimitsResponseBudget: past the byte budget no field resolves
// and the answer is one RESPONSE_TOO_LARGE error.
func TestRequestLimitsResponseBudget(t *testing.T) {
	l := RequestLimits{MaxResponseBytes: 1000, Log: slog.Default()}
	ctx := graphql.WithOperationContext(context.Background(), &graphql.OperationContext{
		Operation: &ast.OperationDefinition{Operation: ast.Query}})
	ran := 0
	resp := l.InterceptResponse(ctx, func(ctx context.Context) *graphql.Response {
		fctx := graphql.WithFieldContext(ctx, &graphql.FieldContext{Field: graphql.CollectedField{Field: &ast.Field{Alias: "input"}}})
		for range 100 {
			_, _ = l.InterceptField(fctx, func(context.Context) (any, error) {
				ran++
				return map[string]any{"name": strings.Repeat("x", 300)}, nil
			})
		}
		return &graphql.Response{Data: []byte(`{}`)}
	})
	if ran > 4 {
		t.Errorf("%d fields resolved past a budget of 1000 bytes", ran)
	}
	if len(resp.Errors) != 1 || resp.Errors[0].Extensions["reason"] != "RESPONSE_TOO_LARGE" || resp.Data != nil {
		t.Errorf("got %+v", resp)
	}
}
