package triggers

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/sluicehq/sluice/internal/requestid"
	"github.com/sluicehq/sluice/internal/store"
)

// Handler serves POST /hooks/{id}. It needs no bearer token: the request's
// signature (or token) is checked against the trigger's secret. 202 when a
// run started (or the event was recorded and could not start one), 200 with
// Sluice-Duplicate: true for a duplicate, 202 with Sluice-Filtered: true
// for a filtered event, 401 when the request does not verify, 404 for a
// URL that names no enabled trigger, 413 over 1 MiB, 429 over the rate
// limit (with Retry-After), 503 when the database is unavailable.
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > MaxBodyBytes {
			writeJSON(w, http.StatusRequestEntityTooLarge, nil, map[string]any{"error": "the body is larger than 1 MiB"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				writeJSON(w, http.StatusRequestEntityTooLarge, nil, map[string]any{"error": "the body is larger than 1 MiB"})
			} else {
				writeJSON(w, http.StatusBadRequest, nil, map[string]any{"error": "could not read the request body"})
			}
			return
		}
		resp, err := s.Receive(r.Context(), Request{
			HookID: r.PathValue("id"), Header: r.Header, Query: r.URL.Query(), Body: body,
			ContentType: r.Header.Get("Content-Type"),
		})
		switch {
		case err == nil:
			writeJSON(w, resp.Status, resp.Headers, resp.Body)
		case errors.Is(err, ErrNoTrigger):
			writeJSON(w, http.StatusNotFound, nil, map[string]any{"error": "not found"})
		case store.Unavailable(err):
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"Retry-After": "5"}, map[string]any{"error": "unavailable; retry later"})
		default:
			rid := requestid.FromContext(r.Context())
			s.opts.Log.ErrorContext(r.Context(), "trigger delivery", "err", err)
			writeJSON(w, http.StatusInternalServerError, nil, map[string]any{"error": "internal error (request " + rid + ")"})
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, headers map[string]string, body any) {
	for k, v := range headers {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}
