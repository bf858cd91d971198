package definition

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed schema.json
var formatSchemaJSON []byte

const formatSchemaURL = "https://schemas.sluice.dev/workflow-definition/v1.json"

// FormatSchema returns the JSON Schema of the definition format, e.g. for
// editors and API documentation.
func FormatSchema() json.RawMessage { return slices.Clone(formatSchemaJSON) }

var formatSchema = sync.OnceValue(func() *jsonschema.Schema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(formatSchemaJSON))
	if err != nil {
		panic("definition: embedded schema.json is not JSON: " + err.Error())
	}
	c := newSchemaCompiler()
	c.RegisterFormat(&jsonschema.Format{Name: "go-duration", Validate: validateGoDuration})
	c.AssertFormat()
	if err := c.AddResource(formatSchemaURL, doc); err != nil {
		panic("definition: " + err.Error())
	}
	return c.MustCompile(formatSchemaURL)
})

// validateGoDuration also rejects non-positive values: a zero Duration is
// indistinguishable from an unset one after decoding, so this is the only
// place an explicit "0s" or "-5s" can be caught.
func validateGoDuration(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("use a Go duration such as 10s, 5m or 1h30m")
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	return nil
}

// refusingLoader stops user-supplied schemas from pulling in files or URLs
// through $ref: definitions are untrusted input evaluated on the server.
type refusingLoader struct{}

func (refusingLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("external $ref %q is not allowed; schemas must be self-contained", strings.TrimPrefix(url, "mem:///"))
}

func newSchemaCompiler() *jsonschema.Compiler {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(refusingLoader{})
	return c
}

type compiledSchema struct {
	schema *jsonschema.Schema
	err    error
}

// userSchemas caches compiled input/expect schemas by their text, because
// the run state machine validates every run input and response against the same few.
var userSchemas sync.Map // string -> compiledSchema

// cachedSchemas bounds userSchemas for the same reason as cachedPrograms.
var cachedSchemas atomic.Int64

const maxCachedSchemas = 10_000

const userSchemaURL = "mem:///schema.json"

// CompileSchema compiles a JSON Schema (draft 2020-12 unless it declares
// $schema) from a definition's input or expect.schema. External $refs are
// refused.
func CompileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	key := string(raw)
	if v, ok := userSchemas.Load(key); ok {
		c := v.(compiledSchema)
		return c.schema, c.err
	}
	c := compileUserSchema(raw)
	if cachedSchemas.Load() < maxCachedSchemas {
		if _, loaded := userSchemas.LoadOrStore(key, c); !loaded {
			cachedSchemas.Add(1)
		}
	}
	return c.schema, c.err
}

func compileUserSchema(raw json.RawMessage) compiledSchema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return compiledSchema{err: fmt.Errorf("not valid JSON: %w", err)}
	}
	c := newSchemaCompiler()
	if err := c.AddResource(userSchemaURL, doc); err != nil {
		return compiledSchema{err: err}
	}
	s, err := c.Compile(userSchemaURL)
	if err != nil {
		return compiledSchema{err: cleanSchemaError(err, doc)}
	}
	return compiledSchema{schema: s}
}

// cleanSchemaError turns the compiler's multi-line metaschema report into
// one line naming the offending keywords, and hides the internal resource
// URL, which means nothing to the author of the schema.
func cleanSchemaError(err error, doc any) error {
	var sve *jsonschema.SchemaValidationError
	if errors.As(err, &sve) {
		var parts []string
		for _, p := range convertSchemaError(sve.Err, doc) {
			at := strings.TrimPrefix(strings.TrimPrefix(p.Path, "$"), ".")
			if at == "" {
				parts = append(parts, p.Message)
			} else {
				parts = append(parts, at+": "+p.Message)
			}
		}
		return errors.New(strings.Join(parts, "; "))
	}
	var lue *jsonschema.LoadURLError
	if errors.As(err, &lue) {
		return lue.Err
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, userSchemaURL+"#", "#")
	msg = strings.ReplaceAll(msg, userSchemaURL, "schema")
	return errors.New(msg)
}

// ValidateJSON checks a JSON value (as produced by encoding/json: maps,
// slices, strings, float64 or json.Number, bools, nil) against a schema from
// the definition, e.g. a run input against Definition.Input or a response
// body against Expect.Schema. Violations are returned as *ValidationError
// with $-paths into v; an empty schema accepts everything.
func ValidateJSON(schema json.RawMessage, v any) error {
	if len(bytes.TrimSpace(schema)) == 0 {
		return nil
	}
	s, err := CompileSchema(schema)
	if err != nil {
		return fmt.Errorf("invalid schema: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return newValidationError(convertSchemaError(err, v))
	}
	return nil
}

// ValidateInput checks a run input against the definition's input schema.
func (d *Definition) ValidateInput(input any) error {
	return ValidateJSON(d.Input, input)
}

func schemaProblems(doc any) []Problem {
	if err := formatSchema().Validate(doc); err != nil {
		return convertSchemaError(err, doc)
	}
	return nil
}

var printer = message.NewPrinter(language.English)

func convertSchemaError(err error, doc any) []Problem {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{Path: "$", Message: err.Error()}}
	}
	var out []Problem
	collectSchemaProblems(ve, doc, &out)
	return out
}

// collectSchemaProblems flattens the validator's error tree to its leaves,
// which carry the precise location, and rewrites the messages that would
// otherwise leak schema internals.
func collectSchemaProblems(e *jsonschema.ValidationError, doc any, out *[]Problem) {
	path := pointerToPath(e.InstanceLocation, doc)
	if _, ok := e.ErrorKind.(*kind.AnyOf); ok && allRequired(e.Causes) {
		var names []string
		for _, c := range e.Causes {
			names = append(names, c.ErrorKind.(*kind.Required).Missing...)
		}
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("one of %s is required%s", strings.Join(quoteAll(names), " or "), forStepType(e, doc))})
		return
	}
	if _, ok := e.ErrorKind.(*kind.AnyOf); ok && len(e.Causes) > 0 {
		// Every alternative failed; listing all of them mostly adds noise
		// ("got string, want array" next to the real complaint), so only the
		// first, primary alternative is explained.
		collectSchemaProblems(e.Causes[0], doc, out)
		return
	}
	if len(e.Causes) > 0 {
		for _, c := range e.Causes {
			collectSchemaProblems(c, doc, out)
		}
		return
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		for _, m := range k.Missing {
			*out = append(*out, Problem{Path: joinKey(path, m), Message: "is required" + forStepType(e, doc)})
		}
	case *kind.AdditionalProperties:
		for _, p := range k.Properties {
			*out = append(*out, Problem{Path: joinKey(path, p), Message: "unknown field"})
		}
	case *kind.FalseSchema:
		msg := "is not allowed here"
		if t := stepTypeAt(e.InstanceLocation, doc); t != "" {
			msg = fmt.Sprintf("is not allowed for %s steps", t)
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	case *kind.Format:
		*out = append(*out, Problem{Path: path, Message: fmt.Sprintf("invalid duration %q: %v", fmt.Sprint(k.Got), k.Err)})
	case *kind.Pattern:
		msg := k.LocalizedString(printer)
		if strings.HasSuffix(e.SchemaURL, "/$defs/stepId") {
			msg = fmt.Sprintf("invalid step id %q: must start with a lowercase letter and contain only lowercase letters, digits and underscores (at most 63 characters)", k.Got)
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	case *kind.MinItems:
		msg := k.LocalizedString(printer)
		if k.Want == 1 {
			msg = "must not be empty"
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	case *kind.MaxItems:
		msg := k.LocalizedString(printer)
		if strings.HasSuffix(e.SchemaURL, "/properties/fallbacks") {
			msg = fmt.Sprintf("at most %d fallbacks are allowed, got %d", k.Want, k.Got)
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	case *kind.MinProperties:
		msg := k.LocalizedString(printer)
		if k.Want == 1 {
			msg = "must not be empty"
		}
		*out = append(*out, Problem{Path: path, Message: msg})
	default:
		*out = append(*out, Problem{Path: path, Message: e.ErrorKind.LocalizedString(printer)})
	}
}

func allRequired(errs []*jsonschema.ValidationError) bool {
	for _, e := range errs {
		if _, ok := e.ErrorKind.(*kind.Required); !ok || len(e.Causes) > 0 {
			return false
		}
	}
	return len(errs) > 0
}

// forStepType names the step type when a requirement comes from a per-type
// rule, so "is required" reads "is required for http steps".
func forStepType(e *jsonschema.ValidationError, doc any) string {
	if !strings.Contains(e.SchemaURL, "/$defs/step/allOf/") {
		return ""
	}
	if t := stepTypeOf(lookupPointer(e.InstanceLocation, doc)); t != "" {
		return " for " + t + " steps"
	}
	return ""
}

// stepTypeAt returns the type of the step that holds the field at loc.
func stepTypeAt(loc []string, doc any) string {
	if len(loc) == 0 {
		return ""
	}
	return stepTypeOf(lookupPointer(loc[:len(loc)-1], doc))
}

func stepTypeOf(v any) string {
	m, _ := v.(map[string]any)
	t, _ := m["type"].(string)
	return t
}

func lookupPointer(loc []string, doc any) any {
	cur := doc
	for _, tok := range loc {
		switch c := cur.(type) {
		case map[string]any:
			cur = c[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil
			}
			cur = c[i]
		default:
			return nil
		}
	}
	return cur
}

// pointerToPath turns JSON pointer tokens into a $-path. The document is
// consulted because a token like "2" is an index in an array but a key in an
// object (e.g. a header named "2").
func pointerToPath(loc []string, doc any) string {
	path := "$"
	cur := doc
	for _, tok := range loc {
		if arr, ok := cur.([]any); ok {
			if i, err := strconv.Atoi(tok); err == nil {
				path = joinIndex(path, i)
				if i >= 0 && i < len(arr) {
					cur = arr[i]
				} else {
					cur = nil
				}
				continue
			}
		}
		path = joinKey(path, tok)
		if m, ok := cur.(map[string]any); ok {
			cur = m[tok]
		} else {
			cur = nil
		}
	}
	return path
}

var plainKey = regexp.MustCompile(`^[A-Za-z_$][A-Za-z0-9_$]*$`)

// JoinKey appends an object key to a JSON path: $.a.b, or $.a['b c'].
func JoinKey(path, key string) string { return joinKey(path, key) }

func joinKey(path, key string) string {
	if plainKey.MatchString(key) {
		return path + "." + key
	}
	return path + "['" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(key) + "']"
}

func joinIndex(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}
