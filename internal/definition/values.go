package definition

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strconv"
)

// The number rule: a JSON number whose value is a whole number within
// int64's range is an int64 (CEL int); any other number is a float64 (CEL
// double). It looks at the value, not at how it is written, so 120, 120.0
// and 1.2e2 are all the int 120: Go writes the double 120.0 as `120`, and
// a value must not change type when it is stored and read back. Every
// value an expression sees goes through it (DecodeJSON, NormalizeJSON),
// whichever path it took: the run input from the API or from Postgres, a
// step output recorded in the same transaction or reloaded for a resume
// or a replay. Where a definition declares a number a double (a JSON
// Schema "number", an expression of type double), Definition.InputValue
// and Definition.OutputValue turn ints back into doubles, so the types
// the checker saw are the types the run sees.

// DecodeJSON decodes a JSON document with the number rule.
func DecodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return NormalizeJSON(v), nil
}

// NormalizeJSON applies the number rule to a decoded JSON value: numbers
// of any Go type (json.Number, float64, int, ...) become int64 or float64.
// Maps and slices are changed in place; the result replaces v.
func NormalizeJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = NormalizeJSON(e)
		}
		return v
	case []any:
		for i, e := range v {
			v[i] = NormalizeJSON(e)
		}
		return v
	}
	return normalizeScalar(v)
}

// normalizedCopy is NormalizeJSON on a deep copy, for values that are
// shared (a run's input, held by the run row).
func normalizedCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = normalizedCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalizedCopy(e)
		}
		return out
	}
	return normalizeScalar(v)
}

func normalizeScalar(v any) any {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i
		}
		f, err := n.Float64()
		if err != nil {
			// Out of float64's range: encoding/json refuses such numbers
			// too; the text is all that is left.
			return n.String()
		}
		return numberValue(f)
	case float64:
		return numberValue(n)
	case float32:
		return numberValue(float64(n))
	case int:
		return int64(n)
	case int8:
		return int64(n)
	case int16:
		return int64(n)
	case int32:
		return int64(n)
	case uint:
		return uintValue(uint64(n))
	case uint8:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	case uint64:
		return uintValue(n)
	}
	return v
}

// numberValue is the number rule for a float64: the int it is written as
// in JSON, so that a double gives the same int in memory as read back.
// Beyond 2^53 that differs from the double's exact value: 2^62 is written
// 4611686018427388000.
func numberValue(f float64) any {
	// -2^63 is exact in a float64 and fits; 2^63 does not.
	if f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return f
	}
	if math.Abs(f) < 1<<53 {
		return int64(f)
	}
	if i, err := strconv.ParseInt(strconv.FormatFloat(f, 'f', -1, 64), 10, 64); err == nil {
		return i
	}
	return f
}

func uintValue(u uint64) any {
	if u <= math.MaxInt64 {
		return int64(u)
	}
	return float64(u)
}

// InputValue is a run's input as its expressions see it: a normalized
// copy, with the numbers the input schema declares "number" as doubles.
func (d *Definition) InputValue(input any) any {
	return d.types.input.coerce(normalizedCopy(input))
}

// OutputValue decodes a stored output of a step as the expressions of its
// dependents see it: with the number rule, and with the numbers the step's
// output type declares double as doubles. An output that does not decode
// is nil.
func (d *Definition) OutputValue(stepID string, raw []byte) any {
	if len(raw) == 0 {
		return nil
	}
	v, err := DecodeJSON(raw)
	if err != nil {
		return nil
	}
	return d.types.outputs[stepID].coerce(v)
}
