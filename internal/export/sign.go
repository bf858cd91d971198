package export

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

// Signer signs and checks download URLs: HMAC-SHA256 under a server secret
// over the export id, the file name and the expiry (Unix seconds). A URL
// carries no tenant and no token; whoever holds it may fetch the file until
// it expires, like a presigned object URL.
type Signer struct{ key []byte }

// NewSigner returns a Signer with secret.
func NewSigner(secret []byte) *Signer { return &Signer{key: secret} }

func (s *Signer) mac(id, file string, exp int64) []byte {
	m := hmac.New(sha256.New, s.key)
	io.WriteString(m, "sluice-export-v1\n"+id+"\n"+file+"\n"+strconv.FormatInt(exp, 10))
	return m.Sum(nil)
}

// Path returns the signed path and query of a file's download URL.
func (s *Signer) Path(id, file string, exp time.Time) string {
	e := exp.Unix()
	q := url.Values{"exp": {strconv.FormatInt(e, 10)}, "sig": {base64.RawURLEncoding.EncodeToString(s.mac(id, file, e))}}
	return "/exports/" + url.PathEscape(id) + "/" + url.PathEscape(file) + "?" + q.Encode()
}

var (
	errBadSignature = errors.New("bad signature")
	errExpired      = errors.New("expired")
)

// check verifies a request's signature first and its expiry second, so an
// altered expiry is a bad signature, never "expired".
func (s *Signer) check(id, file, exp, sig string, now time.Time) error {
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return errBadSignature
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(id, file, e)) {
		return errBadSignature
	}
	if now.Unix() >= e {
		return errExpired
	}
	return nil
}

var fileName = regexp.MustCompile(`^[a-z]+\.(ndjson\.gz|json)$`)

// Handler serves GET /exports/{id}/{file}: 403 for a missing or wrong
// signature, 410 for an expired URL or a file no longer stored (the export
// expired and was purged), the file streamed from the store otherwise. The
// answers never say whether an export exists: only a valid signature, which
// Sluice alone can make, gets past the first check.
func (s *Service) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		id, file := r.PathValue("id"), r.PathValue("file")
		q := r.URL.Query()
		switch s.signer.check(id, file, q.Get("exp"), q.Get("sig"), s.now()) {
		case nil:
		case errExpired:
			http.Error(w, "this download link has expired", http.StatusGone)
			return
		default:
			http.Error(w, "invalid download link", http.StatusForbidden)
			return
		}
		if !fileName.MatchString(file) {
			http.Error(w, "this download link has expired", http.StatusGone)
			return
		}
		rc, size, err := s.o.Store.Open(r.Context(), id+"/"+file)
		if errors.Is(err, ErrNoObject) {
			http.Error(w, "this download link has expired", http.StatusGone)
			return
		}
		if err != nil {
			s.log.ErrorContext(r.Context(), "export download", "export", id, "file", file, "err", err)
			http.Error(w, "the export store is unavailable", http.StatusServiceUnavailable)
			return
		}
		defer rc.Close()
		w.Header().Set("Content-Type", contentType(file))
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.Header().Set("Content-Disposition", `attachment; filename="`+id+"-"+file+`"`)
		w.Header().Set("Cache-Control", "private, no-store")
		if r.Method == http.MethodHead {
			return
		}
		if _, err := io.Copy(w, rc); err != nil {
			s.log.WarnContext(r.Context(), "export download interrupted", "export", id, "file", file, "err", err)
		}
	})
}

// parse returns the query of a signed path (tests).
func parse(path string) (map[string]string, error) {
	u, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range u.Query() {
		out[k] = v[0]
	}
	return out, nil
}
