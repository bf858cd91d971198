package secrets

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// Redacted replaces every scrubbed occurrence of a secret value.
const Redacted = "[REDACTED]"

// minRedactLen is the shortest value a Redactor scrubs. Shorter values match
// ordinary text so often that the output becomes unreadable, and the pattern
// of marks would itself reveal the value.
const minRedactLen = 4

// A Redactor scrubs known secret values from text bound for traces, logs,
// errors and webhook payloads. It is safe for concurrent use; the nil
// Redactor scrubs nothing.
type Redactor struct {
	replacer *strings.Replacer
}

// NewRedactor returns a Redactor for values. Besides each value as given it
// scrubs the encodings a secret commonly leaks through: base64 (standard and
// URL alphabets, padded or not), URL query and path escaping, and JSON string
// escaping.
//
// It cannot see a value encoded together with other text, such as a password
// inside a base64 Basic auth header; scrub such headers by name instead.
func NewRedactor(values ...string) *Redactor {
	seen := map[string]bool{}
	var forms []string
	add := func(s string) {
		if len(s) >= minRedactLen && !seen[s] {
			seen[s] = true
			forms = append(forms, s)
		}
	}
	for _, v := range values {
		if len(v) < minRedactLen {
			continue
		}
		add(v)
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			add(enc.EncodeToString([]byte(v)))
		}
		add(url.QueryEscape(v))
		add(url.PathEscape(v))
		add(jsonEscape(v, true))
		add(jsonEscape(v, false))
	}
	if len(forms) == 0 {
		return &Redactor{}
	}
	// strings.Replacer tries its patterns in argument order at each position,
	// so longer forms go first: a value that is a prefix of another's
	// encoding must not leave the rest of that encoding behind.
	slices.SortStableFunc(forms, func(a, b string) int { return len(b) - len(a) })
	pairs := make([]string, 0, 2*len(forms))
	for _, f := range forms {
		pairs = append(pairs, f, Redacted)
	}
	return &Redactor{replacer: strings.NewReplacer(pairs...)}
}

// jsonEscape returns s as it appears between the quotes of a JSON string.
func jsonEscape(s string, escapeHTML bool) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s) // encoding a string cannot fail
	out := strings.TrimSuffix(buf.String(), "\n")
	return strings.TrimSuffix(strings.TrimPrefix(out, `"`), `"`)
}

// String returns s with every known secret form replaced by [REDACTED].
func (r *Redactor) String(s string) string {
	if r == nil || r.replacer == nil {
		return s
	}
	return r.replacer.Replace(s)
}

// Bytes returns b with every known secret form replaced by [REDACTED]. It
// never modifies b.
func (r *Redactor) Bytes(b []byte) []byte {
	if r == nil || r.replacer == nil {
		return slices.Clone(b)
	}
	return []byte(r.replacer.Replace(string(b)))
}

// SecretStrings returns every string leaf of a secret (map values and array
// elements at any depth, not keys), sorted and without duplicates, for
// building a Redactor. Keys are left out because they name fields ("apiKey")
// rather than hold secret values.
func SecretStrings(secret map[string]any) []string {
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			out = append(out, v)
		case map[string]any:
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		case map[string]string:
			for _, e := range v {
				out = append(out, e)
			}
		case []string:
			out = append(out, v...)
		}
	}
	walk(secret)
	slices.Sort(out)
	return slices.Compact(out)
}
