package graph

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/store"
)

// ErrorPresenter turns domain errors into GraphQL errors with
// extensions.code. Anything unclassified is logged and shown as INTERNAL with
// the request id, never with its message.
func ErrorPresenter(log *slog.Logger) graphql.ErrorPresenterFunc {
	return func(ctx context.Context, err error) *gqlerror.Error {
		gqlErr := graphql.DefaultErrorPresenter(ctx, err)
		var already *gqlerror.Error
		if errors.As(err, &already) && already.Extensions != nil && already.Extensions["code"] != nil {
			return gqlErr
		}
		if p, ok := inputCoercionPath(ctx, err); ok {
			// gqlgen could not turn an argument into its Go type (an enum
			// in the wrong case, a Time that is not RFC 3339, a Map given a
			// string): the client's input is wrong, at that path.
			gqlErr.Message = p + ": " + gqlErr.Message
			gqlErr.Extensions = map[string]any{"code": string(errs.Validation), "path": p,
				"problems": []errs.Problem{{Path: p, Message: already.Message}}}
			return gqlErr
		}
		if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
			// The client went away; the response is never read and the
			// operation logs the cancellation once (see RequestBudget).
			gqlErr.Message = "request cancelled"
			gqlErr.Extensions = map[string]any{"code": string(errs.Unavailable)}
			return gqlErr
		}
		code, msg, problems := classify(err)
		if code == errs.Internal {
			rid := requestid.FromContext(ctx)
			log.ErrorContext(ctx, "internal error", "err", err, "request_id", rid, "path", gqlErr.Path.String())
			msg = "internal error (request " + rid + ")"
		}
		gqlErr.Message = msg
		gqlErr.Extensions = map[string]any{"code": string(code)}
		if len(problems) > 0 {
			gqlErr.Extensions["problems"] = problems
			gqlErr.Extensions["path"] = problems[0].Path
		}
		return gqlErr
	}
}

func classify(err error) (errs.Code, string, []errs.Problem) {
	if e, ok := errs.As(err); ok {
		return e.Code, e.Message, e.Problems
	}
	switch {
	case store.Unavailable(err):
		return errs.Unavailable, "the database is unavailable; retry later", nil
	case ent.IsNotFound(err):
		return errs.NotFound, "not found", nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "23") {
		return constraintError(pgErr)
	}
	switch {
	case ent.IsConstraintError(err):
		return errs.Conflict, "conflicts with an existing object", nil
	case errors.Is(err, privacy.Deny):
		return errs.Forbidden, "not allowed", nil
	case ent.IsValidationError(err):
		var ve *ent.ValidationError
		errors.As(err, &ve)
		return errs.Validation, err.Error(), []errs.Problem{{Path: "input." + ve.Name, Message: err.Error()}}
	}
	return errs.Internal, "", nil
}

// constraintError classifies an integrity violation by its SQLSTATE: only a
// unique violation is a CONFLICT; a foreign key violation means the object
// referred to does not exist (for this tenant: other tenants' objects are not
// seen); check and not-null violations are bad input.
func constraintError(e *pgconn.PgError) (errs.Code, string, []errs.Problem) {
	switch e.Code {
	case "23505": // unique_violation
		return errs.Conflict, "conflicts with an existing object", nil
	case "23503": // foreign_key_violation
		msg := "refers to an object that does not exist"
		if e.ConstraintName != "" {
			msg += " (" + e.ConstraintName + ")"
		}
		return errs.NotFound, msg, nil
	case "23502": // not_null_violation
		path := "input"
		if e.ColumnName != "" {
			path += "." + e.ColumnName
		}
		return errs.Validation, path + ": a value is required", []errs.Problem{{Path: path, Message: "a value is required"}}
	default: // 23514 check_violation, 23P01 exclusion_violation, 23001 restrict_violation
		msg := "violates a constraint"
		if e.ConstraintName != "" {
			msg += " (" + e.ConstraintName + ")"
		}
		return errs.Validation, msg, []errs.Problem{{Path: "input", Message: msg}}
	}
}

// inputCoercionPath returns the argument path ("input.roles[0]") of an
// error gqlgen raised while converting a field's arguments. Such errors are
// *gqlerror.Error whose path continues past the field's own path into its
// arguments; resolver errors end at the field.
func inputCoercionPath(ctx context.Context, err error) (string, bool) {
	var ge *gqlerror.Error
	if !errors.As(err, &ge) || len(ge.Locations) > 0 {
		return "", false
	}
	if _, ok := errs.As(err); ok {
		return "", false
	}
	fc := graphql.GetFieldContext(ctx)
	if fc == nil {
		return "", false
	}
	fieldPath := fc.Path()
	if len(ge.Path) <= len(fieldPath) {
		return "", false
	}
	var b strings.Builder
	for _, el := range ge.Path[len(fieldPath):] {
		switch v := el.(type) {
		case ast.PathName:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(string(v))
		case ast.PathIndex:
			fmt.Fprintf(&b, "[%d]", int(v))
		}
	}
	return b.String(), true
}

// RecoverFunc logs a resolver panic and reports INTERNAL.
func RecoverFunc(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "resolver panic", "panic", p, "request_id", requestid.FromContext(ctx))
		return errs.E(errs.Internal, "internal error (request %s)", requestid.FromContext(ctx))
	}
}
