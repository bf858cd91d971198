package server

import (
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/store"
)

// callbackRoute is the path of wait steps' callbacks, with the token as
// its last segment; the access log and metrics never show the token.
const callbackRoute = "/callbacks"

// callback serves POST /callbacks/{token}: the JSON object in the body
// resolves the wait the token names. It needs no bearer token: the token is
// the credential. 200 once resolved; 404 for a token that names no wait;
// 410 when its wait is over (used, timed out, cancelled), which changes
// nothing; 413, 415 and 400 for a body that is too large, not JSON or not
// a JSON object.
func callback(rs *runs.Service, maxBody int64, log *slog.Logger) http.Handler {
	limit := min(maxBody, runs.MaxEventDataBytes)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
				writeError(w, http.StatusUnsupportedMediaType, errs.Validation, "Content-Type must be application/json")
				return
			}
		}
		tooLarge := "the body is larger than the limit of " + itoa64(limit) + " bytes"
		if r.ContentLength > limit {
			writeError(w, http.StatusRequestEntityTooLarge, errs.Validation, tooLarge)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeError(w, http.StatusRequestEntityTooLarge, errs.Validation, tooLarge)
			} else {
				writeError(w, http.StatusBadRequest, errs.Validation, "could not read the request body")
			}
			return
		}
		data, err := runs.DecodeCallbackBody(body)
		if err != nil {
			writeError(w, http.StatusBadRequest, errs.Validation, err.Error())
			return
		}
		err = rs.Callback(r.Context(), r.PathValue("token"), data)
		switch {
		case err == nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"status":"resolved"}` + "\n"))
		case errors.Is(err, runs.ErrCallbackGone):
			writeError(w, http.StatusGone, errs.Conflict, err.Error())
		case errs.CodeOf(err) == errs.NotFound:
			writeError(w, http.StatusNotFound, errs.NotFound, "no such callback")
		case store.Unavailable(err):
			w.Header().Set("Retry-After", retryAfterSeconds)
			writeError(w, http.StatusServiceUnavailable, errs.Unavailable, "the database is unavailable; retry later")
		default:
			rid := requestid.FromContext(r.Context())
			log.ErrorContext(r.Context(), "callback", "err", err)
			writeError(w, http.StatusInternalServerError, errs.Internal, "internal error (request "+rid+")")
		}
	})
}
