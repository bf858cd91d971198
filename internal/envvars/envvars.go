// Package envvars owns the values of environment variables: their types,
// the rules on names and sizes, and the immutable sets (versions) an
// environment's variables go through. Runs read the set of the version they
// started with (runs.Service), so a resume or a replay sees the values the
// run saw first.
package envvars

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
)

// Type is what a variable holds.
type Type string

// The variable types. `number` is a CEL double, `integer` a CEL int.
const (
	String  Type = "string"
	Number  Type = "number"
	Integer Type = "integer"
	Boolean Type = "boolean"
	JSON    Type = "json"
)

// Types lists every type, in the order documented.
var Types = []Type{String, Number, Integer, Boolean, JSON}

// Valid reports whether t is a known type.
func (t Type) Valid() bool {
	for _, k := range Types {
		if t == k {
			return true
		}
	}
	return false
}

// MarshalGQL writes the GraphQL enum value (upper case).
func (t Type) MarshalGQL(w io.Writer) {
	_, _ = io.WriteString(w, strconv.Quote(upper(string(t))))
}

// UnmarshalGQL reads the GraphQL enum value.
func (t *Type) UnmarshalGQL(v any) error {
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("variable type must be a string")
	}
	k := Type(lower(s))
	if !k.Valid() {
		return fmt.Errorf("%q is not a variable type (STRING, NUMBER, INTEGER, BOOLEAN, JSON)", s)
	}
	*t = k
	return nil
}

func upper(s string) string { return string(bytes.ToUpper([]byte(s))) }
func lower(s string) string { return string(bytes.ToLower([]byte(s))) }

// Limits on what an environment holds.
const (
	MaxVariables  = 200
	MaxValueBytes = 16 << 10 // one value, as JSON
	MaxNameLen    = 63
)

// NamePattern is what a variable name must match: a CEL identifier, so that
// `env.vars.<name>` reads it.
var NamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// Variable is one named value of an environment.
type Variable struct {
	Name  string `json:"name"`
	Type  Type   `json:"type"`
	Value any    `json:"value"`
}

// UnmarshalJSON keeps numbers exact (json.Number) and then types them.
func (v *Variable) UnmarshalJSON(b []byte) error {
	var raw struct {
		Name  string          `json:"name"`
		Type  Type            `json:"type"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	val, err := decode(raw.Value)
	if err != nil {
		return err
	}
	v.Name, v.Type, v.Value = raw.Name, raw.Type, val
	return nil
}

func decode(b []byte) (any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// Check validates a value against its type and the size limit and returns
// it in canonical form: integers as int64, numbers as float64, JSON as
// decoded with exact numbers. The message says what is wrong.
func Check(t Type, value any) (any, string) {
	if !t.Valid() {
		return nil, "type must be one of string, number, integer, boolean, json"
	}
	b, err := json.Marshal(value)
	if err != nil {
		return nil, "value is not JSON"
	}
	if len(b) > MaxValueBytes {
		return nil, fmt.Sprintf("value is %d bytes as JSON; at most %d", len(b), MaxValueBytes)
	}
	v, err := decode(b)
	if err != nil {
		return nil, "value is not JSON"
	}
	switch t {
	case String:
		if s, ok := v.(string); ok {
			return s, ""
		}
	case Boolean:
		if x, ok := v.(bool); ok {
			return x, ""
		}
	case Integer:
		if n, ok := v.(json.Number); ok {
			if i, err := n.Int64(); err == nil {
				return i, ""
			}
		}
	case Number:
		if n, ok := v.(json.Number); ok {
			if f, err := n.Float64(); err == nil {
				return f, ""
			}
		}
	case JSON:
		if v == nil {
			return nil, "value must not be null"
		}
		return v, ""
	}
	return nil, fmt.Sprintf("value %s is not of type %s", truncate(string(b), 60), t)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Accepts reports whether a variable of type have satisfies a declaration
// of type want: the same type, or an integer where a number is declared.
func Accepts(want, have Type) bool {
	return want == have || (want == Number && have == Integer)
}

// Sorted returns the variables ordered by name.
func Sorted(m map[string]Variable) []Variable {
	out := make([]Variable, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
