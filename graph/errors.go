package graph

import (
	"context"
	"errors"
	"log/slog"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/requestid"
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
	case ent.IsNotFound(err):
		return errs.NotFound, "not found", nil
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

// RecoverFunc logs a resolver panic and reports INTERNAL.
func RecoverFunc(log *slog.Logger) graphql.RecoverFunc {
	return func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "resolver panic", "panic", p, "request_id", requestid.FromContext(ctx))
		return errs.E(errs.Internal, "internal error (request %s)", requestid.FromContext(ctx))
	}
}
