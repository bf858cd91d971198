package definition

import (
	"bytes"
	"encoding/json"
	"maps"
	"regexp"
	"slices"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
)

// What is known of the values expressions read, before a run: a shape per
// JSON value. The input's comes from the version's input JSON Schema, a
// step's output from its type (a transform's from the types of its
// expressions and literals, an http step's body from expect.schema).
// Whatever is not known is dyn, which the checker accepts anywhere.
// The same shapes type-check expressions at create and publish and, at
// run time, turn integral numbers declared double back into doubles
// (coerce), so that what the checker saw is what the run sees.

type shapeKind uint8

const (
	shapeDyn shapeKind = iota
	shapeInt
	shapeDouble
	shapeString
	shapeBool
	shapeNull
	shapeList   // every element is elem
	shapeObject // an object with known fields; the others are dyn
	shapeMap    // an object whose every value is elem
)

// shape is what is known of a JSON value; nil means nothing (dyn).
type shape struct {
	kind   shapeKind
	elem   *shape
	fields map[string]*shape
	// maybeNotObject: an object schema without "type": its properties
	// constrain the value only when it is an object, so its fields are
	// typed but the value as a whole is dyn.
	maybeNotObject bool
}

var (
	intShape    = &shape{kind: shapeInt}
	doubleShape = &shape{kind: shapeDouble}
	stringShape = &shape{kind: shapeString}
	boolShape   = &shape{kind: shapeBool}
	nullShape   = &shape{kind: shapeNull}
)

func listOf(elem *shape) *shape { return &shape{kind: shapeList, elem: elem} }
func mapOf(elem *shape) *shape  { return &shape{kind: shapeMap, elem: elem} }

func objectOf(fields map[string]*shape) *shape {
	return &shape{kind: shapeObject, fields: fields}
}

// celType is the CEL type of the value as a whole. Objects are maps of dyn:
// a field the shape does not know may still be there.
func (s *shape) celType() *types.Type {
	if s == nil {
		return types.DynType
	}
	switch s.kind {
	case shapeInt:
		return types.IntType
	case shapeDouble:
		return types.DoubleType
	case shapeString:
		return types.StringType
	case shapeBool:
		return types.BoolType
	case shapeNull:
		return types.NullType
	case shapeList:
		return types.NewListType(s.elem.celType())
	case shapeMap:
		return types.NewMapType(types.StringType, s.elem.celType())
	case shapeObject:
		if !s.maybeNotObject {
			return types.NewMapType(types.StringType, types.DynType)
		}
	}
	return types.DynType
}

// field is the shape of an object's field, nil when unknown.
func (s *shape) field(name string) *shape {
	switch {
	case s == nil:
		return nil
	case s.kind == shapeObject:
		return s.fields[name]
	case s.kind == shapeMap:
		return s.elem
	}
	return nil
}

// coerce makes a value decoded with the number rule agree with the shape:
// ints where a double is declared become doubles. Maps and slices are
// changed in place. Values of another kind than declared are left alone.
func (s *shape) coerce(v any) any {
	if s == nil {
		return v
	}
	switch s.kind {
	case shapeDouble:
		if i, ok := v.(int64); ok {
			return float64(i)
		}
	case shapeList:
		if l, ok := v.([]any); ok && s.elem != nil {
			for i, e := range l {
				l[i] = s.elem.coerce(e)
			}
		}
	case shapeMap:
		if m, ok := v.(map[string]any); ok && s.elem != nil {
			for k, e := range m {
				m[k] = s.elem.coerce(e)
			}
		}
	case shapeObject:
		if m, ok := v.(map[string]any); ok {
			for k, f := range s.fields {
				if e, ok := m[k]; ok {
					m[k] = f.coerce(e)
				}
			}
		}
	}
	return v
}

func sameShape(a, b *shape) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.kind != b.kind || a.maybeNotObject != b.maybeNotObject || !sameShape(a.elem, b.elem) || len(a.fields) != len(b.fields) {
		return false
	}
	for k, f := range a.fields {
		g, ok := b.fields[k]
		if !ok || !sameShape(f, g) {
			return false
		}
	}
	return true
}

// schemaShape reads what a JSON Schema guarantees of the values it
// accepts. Only "type" (with properties and items) is read: JSON Schema
// keywords all constrain the value, so what "type" says holds whatever
// else the schema says, and what it does not say stays dyn ($ref, anyOf,
// enum without type, ...). A schema that does not decode is dyn.
func schemaShape(raw json.RawMessage) *shape {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	doc, err := DecodeJSON(raw)
	if err != nil {
		return nil
	}
	return schemaValueShape(doc, 0)
}

// maxSchemaDepth bounds the walk; deeper parts are dyn.
const maxSchemaDepth = 32

func schemaValueShape(v any, depth int) *shape {
	s, ok := v.(map[string]any)
	if !ok || depth > maxSchemaDepth {
		return nil
	}
	typ, hasType := schemaType(s["type"])
	switch typ {
	case "integer":
		return intShape
	case "number":
		return doubleShape
	case "string":
		return stringShape
	case "boolean":
		return boolShape
	case "null":
		return nullShape
	case "array":
		return listOf(schemaValueShape(s["items"], depth+1))
	case "object", "":
		props, _ := s["properties"].(map[string]any)
		if !hasType && props == nil {
			return nil
		}
		fields := make(map[string]*shape, len(props))
		for name, p := range props {
			if f := schemaValueShape(p, depth+1); f != nil {
				fields[name] = f
			}
		}
		if typ == "object" && len(props) == 0 {
			// A map: every value is what additionalProperties says.
			if ap := schemaValueShape(s["additionalProperties"], depth+1); ap != nil {
				return mapOf(ap)
			}
		}
		return &shape{kind: shapeObject, fields: fields, maybeNotObject: !hasType}
	}
	return nil
}

// schemaType reads "type": one type name, or a list of them. A list is
// dyn except integer with number, which is a number; "null" alongside
// another type makes the value nullable, so dyn. ok reports whether the
// value is sure to be of the type ("" with ok false: no type given).
func schemaType(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, true
	case []any:
		var names []string
		for _, e := range t {
			if s, ok := e.(string); ok {
				names = append(names, s)
			}
		}
		slices.Sort(names)
		names = slices.Compact(names)
		switch {
		case len(names) == 1:
			return names[0], true
		case slices.Equal(names, []string{"integer", "number"}):
			return "number", true
		}
		return "dyn", true
	}
	return "", false
}

// celShape is the shape of an expression's result from its CEL type, as
// toJSONValue converts it: bytes, timestamps and durations become strings;
// uints, optionals and maps with other keys than strings are dyn.
func celShape(t *types.Type) *shape {
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case types.IntKind:
		return intShape
	case types.DoubleKind:
		return doubleShape
	case types.StringKind, types.BytesKind, types.TimestampKind, types.DurationKind:
		return stringShape
	case types.BoolKind:
		return boolShape
	case types.NullTypeKind:
		return nullShape
	case types.ListKind:
		return listOf(celShape(t.Parameters()[0]))
	case types.MapKind:
		if t.Parameters()[0].Kind() == types.StringKind {
			return mapOf(celShape(t.Parameters()[1]))
		}
	}
	return nil
}

// literalShape is the shape of a literal leaf of a transform output.
func literalShape(v any) *shape {
	switch v := v.(type) {
	case json.Number:
		switch normalizeScalar(v).(type) {
		case int64:
			return intShape
		case float64:
			return doubleShape
		}
	case bool:
		return boolShape
	case nil:
		return nullShape
	}
	return nil
}

// joinShapes is the shape of a list's elements: theirs when they agree.
func joinShapes(shapes []*shape) *shape {
	if len(shapes) == 0 {
		return nil
	}
	for _, s := range shapes[1:] {
		if !sameShape(s, shapes[0]) {
			return nil
		}
	}
	return shapes[0]
}

// Shapes of the outputs Sluice builds itself (runs and steps packages).
var (
	llmOutputShape = objectOf(map[string]*shape{
		"text": stringShape, "finishReason": stringShape, "model": stringShape,
		"usage": objectOf(map[string]*shape{"inputTokens": intShape, "outputTokens": intShape, "cachedInputTokens": intShape}),
	})
	approvalOutputShape = objectOf(map[string]*shape{
		"approved": boolShape, "decision": stringShape, "decidedBy": stringShape, "comment": stringShape, "timedOut": boolShape,
	})
	delayOutputShape = objectOf(map[string]*shape{"resumedAt": stringShape})
)

// llmShape is an llm step's output: with an outputSchema, its `json` is
// what the schema says (the reply is checked against it before the step
// succeeds).
func llmShape(s *Step) *shape {
	if len(s.OutputSchema) == 0 {
		return llmOutputShape
	}
	fields := maps.Clone(llmOutputShape.fields)
	if j := schemaShape(s.OutputSchema); j != nil {
		fields["json"] = j
	}
	return objectOf(fields)
}

// httpOutputShape: {status, headers, body}. The body is what expect.schema
// says when every status the step accepts is a 2xx, the only responses
// the schema is checked against.
func httpOutputShape(s *Step) *shape {
	var body *shape
	if e := s.Expect; e != nil && len(e.Schema) > 0 && !slices.ContainsFunc(e.Status, func(c int) bool { return c < 200 || c > 299 }) {
		body = schemaShape(e.Schema)
	}
	fields := map[string]*shape{"status": intShape, "headers": mapOf(stringShape)}
	if body != nil {
		fields["body"] = body
	}
	return objectOf(fields)
}

// definitionTypes is what a definition's validation found out about the
// values its expressions read.
type definitionTypes struct {
	input   *shape
	outputs map[string]*shape // step id -> output shape
}

// celIdent matches the field names a select expression can name.
var celIdent = regexp.MustCompile(`^[_a-zA-Z][_a-zA-Z0-9]*$`)

// pathTypes gives the checker the types of qualified names such as
// `input.amount` or `steps.fetch.output.body.id`. The checker resolves a
// chain of field selections on a variable as a qualified name first,
// longest first, asking its type provider (FindStructType) for names that
// are not declared variables; a local variable (a comprehension's or
// cel.bind's) shadows the variable, so `[1].map(input, input.x)` is not
// resolved here. Paths are added as steps are checked in dependency
// order, so one checker environment serves a whole definition.
type pathTypes struct {
	types.Provider
	paths map[string]*shape
}

// FindStructType implements types.Provider.
func (p *pathTypes) FindStructType(name string) (*types.Type, bool) {
	if s, ok := p.paths[name]; ok {
		return s.celType(), true
	}
	return p.Provider.FindStructType(name)
}

// declare adds a path and the paths of its known fields.
func (p *pathTypes) declare(path string, s *shape) {
	if s == nil {
		return
	}
	p.paths[path] = s
	if s.kind != shapeObject {
		return
	}
	for name, f := range s.fields {
		if celIdent.MatchString(name) {
			p.declare(path+"."+name, f)
		}
	}
}

// typedEnv is the checker environment of one definition's validation.
func typedEnv(paths *pathTypes) (*cel.Env, error) {
	base := celEnv()
	paths.Provider = base.CELTypeProvider()
	return base.Extend(cel.CustomTypeProvider(paths))
}
