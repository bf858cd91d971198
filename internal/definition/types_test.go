package definition

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// typedDoc is a definition whose input schema is schema and whose steps
// are the given step objects.
func typedDoc(schema string, stepObjs ...string) []byte {
	doc := `{"schemaVersion":1`
	if schema != "" {
		doc += `,"input":` + schema
	}
	return []byte(doc + `,"steps":[` + strings.Join(stepObjs, ",") + `]}`)
}

// orderSchema exercises nested objects, arrays and optional properties.
const orderSchema = `{"type":"object","required":["amount","name","customer"],"properties":{
	"amount":{"type":"integer"},
	"price":{"type":"number"},
	"name":{"type":"string"},
	"express":{"type":"boolean"},
	"discount":{"type":"integer"},
	"note":{"type":["string","null"]},
	"tags":{"type":"array","items":{"type":"string"}},
	"lines":{"type":"array","items":{"type":"object","properties":{"qty":{"type":"integer"}}}},
	"customer":{"type":"object","required":["tier"],"properties":{
		"tier":{"type":"integer"},
		"address":{"type":"object","properties":{"zip":{"type":"string"}}}}},
	"meta":{"type":"object","additionalProperties":{"type":"number"}},
	"ref":{"$ref":"#/$defs/x"}},
	"$defs":{"x":{"type":"integer"}}}`

func transform(id, output string, needs ...string) string {
	s := `{"id":"` + id + `","type":"transform","output":` + output
	if len(needs) > 0 {
		b, _ := json.Marshal(needs)
		s += `,"needs":` + string(b)
	}
	return s + `}`
}

func q(expr string) string {
	b, _ := json.Marshal(expr)
	return string(b)
}

// TestTypeCheckInput checks expressions against what the input schema
// says: typed properties, nested objects, arrays, optional properties,
// and dyn for everything the schema does not pin down.
func TestTypeCheckInput(t *testing.T) {
	accepted := []string{
		"input.amount * 2",
		"input.amount + input.customer.tier",
		"input.price * 1.5",
		"input.price > 5", // numbers compare across types
		"double(input.amount) * input.price",
		"input.amount * int(input.price)",
		"input.name + '!'",
		"input.name.size() * 2",
		"input.tags.map(t, t + '!')",
		"input.tags[0] + 'x'",
		"input.lines.map(l, l.qty * 2)", // list elements that are objects: dyn
		"input.customer.address.zip + '-1'",
		"input.customer.address.city * 2", // not declared: dyn
		"input.meta.x * 1.5",              // additionalProperties
		"input.undeclared * 2",            // not in properties: dyn
		"input.note + 'x'",                // nullable: dyn
		"input.ref * 2",                   // $ref: dyn
		"has(input.discount) ? input.discount * 2 : 0",
		"input.?discount.orValue(0) * 2",
		"input['amount'] * 1.5", // index forms are dyn
		"input.amount == 1.5",   // equality compares across types
		"input.amount in [1.5]",
		"input.express ? input.amount : 'none'", // branches may differ
		"[1].map(input, input + 1)",             // a local variable shadows input
		"cel.bind(input, {'amount': 'x'}, input.amount + 'y')",
		"{'n': input.amount, 'l': input.tags}",
	}
	for _, expr := range accepted {
		t.Run("accepts "+expr, func(t *testing.T) {
			if _, err := Parse(typedDoc(orderSchema, transform("a", q(expr)))); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
	refused := []struct{ expr, want string }{
		{"input.amount * 1.5", "int * double: convert with double(...) or int(...), for example double(input.amount) * 1.5"},
		{"input.amount + input.price", "int + double: convert with double(...) or int(...), for example double(input.amount) + input.price"},
		{"input.price / 2", "double / int: convert with double(...) or int(...), for example input.price / double(2)"},
		{"input.name * 2", "string * int: * takes two numbers of one type"},
		{"input.name + input.amount", "string + int: + joins two strings; convert the other side with string(...), for example input.name + string(input.amount)"},
		{"input.customer.tier * 0.5", "int * double"},
		{"input.customer.address.zip + 1", "string + int"},
		{"input.discount * 1.5", "int * double"}, // optional, but an int when present
		{"input.tags[0] * 2", "string * int"},
		{"input.tags + 1", "list(string) + int"},
		{"size(input.amount)", "no function size takes (int)"},
		{"input.amount.startsWith('1')", "int has no method startsWith(string)"},
		{"input.amount.x", "type 'int' does not support field selection"},
		{"input.amount < 'a'", "int < string: < compares"},
		{"input.express && input.amount", "expected type 'bool' but found 'int' (in input.amount)"},
		{"input.amount * 1.5 > 0", "input.amount * 1.5: int * double"},
	}
	for _, tt := range refused {
		t.Run("refuses "+tt.expr, func(t *testing.T) {
			_, err := Parse(typedDoc(orderSchema, transform("a", `{"v":`+q(tt.expr)+`}`)))
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 {
				t.Fatalf("want one problem, got %v", err)
			}
			p := ve.Problems[0]
			if p.Path != "$.steps[0].output.v" || !strings.Contains(p.Message, tt.want) || !strings.Contains(p.Message, "type error in "+strconv.Quote(tt.expr)) {
				t.Errorf("problem %s, want at $.steps[0].output.v a message with %q", p, tt.want)
			}
		})
	}
}

// TestTypeCheckStepOutputs: a step's output type follows from its type
// and expressions, and its dependents are checked against it.
func TestTypeCheckStepOutputs(t *testing.T) {
	const input = `{"type":"object","properties":{"amount":{"type":"integer"},"price":{"type":"number"}}}`
	accepted := []string{
		transform("a", `{"x":1,"d":2.5,"y":"input.amount * 2","p":"input.price * 2.0","l":[1,2],"m":"{'k': 1.5}","s":"'s'"}`),
		transform("b", q("steps.a.output.x + 1 + steps.a.output.y"), "a"),
		transform("c", q("steps.a.output.d * steps.a.output.p + steps.a.output.m.k"), "a"),
		transform("d", q("steps.a.output.l.map(e, e * 2)"), "a"),
		transform("e", q("steps.b.output * 2"), "b"),                           // an int expression's output is an int
		transform("f", q("steps.a.output"), "a"),                               // passes its shape on
		transform("g", q("steps.f.output.x + steps.f.output.undeclared"), "f"), // fields it does not know: dyn
		`{"id":"h","type":"http","request":{"method":"GET","url":"https://x.example/{{ steps.a.output.x + 1 }}"},"needs":["a"]}`,
		transform("i", q("steps.h.output.status >= 200 && steps.h.output.headers['x'] + '' != '' && steps.h.output.body.anything * 2 > 0"), "h"),
		`{"id":"j","type":"http","request":{"method":"GET","url":"https://x.example"},"expect":{"schema":{"type":"object","properties":{"id":{"type":"integer"},"name":{"type":"string"}}}}}`,
		transform("k", q("steps.j.output.body.id + 1"), "j"),
		`{"id":"l","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}]}`,
		transform("m", q("steps.l.output.text + ' ' + string(steps.l.output.usage.outputTokens + 1)"), "l"),
		`{"id":"n","type":"approval","approvers":{"roles":["operator"]}}`,
		transform("o", q("steps.n.output.approved && steps.n.output.comment != ''"), "n"),
		`{"id":"p","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":{"type":"object","properties":{"total":{"type":"integer"},"label":{"type":"string"}}}}`,
		transform("r", q("steps.p.output.json.total + 1 + size(steps.p.output.json.label) + size(steps.p.output.text)"), "p"),
	}
	if _, err := Parse(typedDoc(input, accepted...)); err != nil {
		t.Fatalf("refused: %v", err)
	}

	refused := []struct{ name, step, want string }{
		{"int output plus a double", transform("b", q("steps.a.output.x + 1.5"), "a"), "int + double"},
		{"double literal times an int", transform("b", q("steps.a.output.d * 2"), "a"), "double * int"},
		{"expression output", transform("b", q("steps.a.output.y * 1.5"), "a"), "int * double"},
		{"string output", transform("b", q("steps.a.output.s * 2"), "a"), "string * int"},
		{"whole output of a scalar transform", transform("b", q("steps.c.output + 'x'"), "c"), "int + string"},
		{"http status", `{"id":"b","type":"transform","needs":["h"],"output":` + q("steps.h.output.status + 'x'") + `}`, "int + string"},
		{"http body from expect.schema", `{"id":"b","type":"transform","needs":["j"],"output":` + q("steps.j.output.body.name * 2") + `}`, "string * int"},
		{"in a template", `{"id":"b","type":"http","needs":["a"],"request":{"method":"GET","url":"https://x.example/{{ steps.a.output.s - 1 }}"}}`, "string - int"},
		{"in an if", `{"id":"b","type":"transform","needs":["a"],"if":` + q("steps.a.output.x") + `,"output":"1"}`, "must produce a bool, not int"},
	}
	base := []string{
		transform("a", `{"x":1,"d":2.5,"y":"input.amount * 2","s":"'s'"}`),
		transform("c", q("input.amount + 1")),
		`{"id":"h","type":"http","request":{"method":"GET","url":"https://x.example"}}`,
		`{"id":"j","type":"http","request":{"method":"GET","url":"https://x.example"},"expect":{"schema":{"type":"object","properties":{"name":{"type":"string"}}}}}`,
	}
	// An llm step's json is what its outputSchema says.
	llm := `{"id":"p","type":"llm","model":"m","messages":[{"role":"user","content":"hi"}],"outputSchema":{"type":"object","properties":{"total":{"type":"integer"}}}}`
	_, err := Parse(typedDoc(input, llm, transform("r", q("steps.p.output.json.total * 1.5"), "p")))
	var llmErr *ValidationError
	if !errors.As(err, &llmErr) || len(llmErr.Problems) != 1 || !strings.HasPrefix(llmErr.Problems[0].Path, "$.steps[1].") || !strings.Contains(llmErr.Problems[0].Message, "int * double") {
		t.Errorf("llm json from outputSchema: want one problem at $.steps[1] with int * double, got %v", err)
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(typedDoc(input, append(base, tt.step)...))
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) != 1 || !strings.HasPrefix(ve.Problems[0].Path, "$.steps[4].") || !strings.Contains(ve.Problems[0].Message, tt.want) {
				t.Errorf("want one problem at $.steps[4] with %q, got %v", tt.want, err)
			}
		})
	}
}

// TestTypeCheckUnknownIsDyn: nothing is refused for want of types: no
// input schema, untyped schema parts, http bodies without a schema or with
// non-2xx statuses accepted, steps read by index.
func TestTypeCheckUnknownIsDyn(t *testing.T) {
	for name, doc := range map[string][]byte{
		"no input schema":       typedDoc("", transform("a", q("input.amount * 1.5 + input.x.y.z"))),
		"schema without types":  typedDoc(`{"properties":{"amount":{"minimum":1}}}`, transform("a", q("input.amount * 1.5"))),
		"anyOf":                 typedDoc(`{"type":"object","properties":{"n":{"anyOf":[{"type":"integer"},{"type":"string"}]}}}`, transform("a", q("input.n * 1.5 > input.n * 2"))),
		"http body, no schema":  typedDoc("", `{"id":"h","type":"http","request":{"method":"GET","url":"https://x.example"}}`, transform("a", q("steps.h.output.body.n * 1.5"), "h")),
		"schema, 404 accepted":  typedDoc("", `{"id":"h","type":"http","request":{"method":"GET","url":"https://x.example"},"expect":{"status":[200,404],"schema":{"type":"object","properties":{"n":{"type":"integer"}}}}}`, transform("a", q("steps.h.output.body.n * 1.5"), "h")),
		"step read by index":    typedDoc("", transform("a", `{"x":1}`), transform("b", q("steps['a'].output.x * 1.5"), "a")),
		"dyn expression output": typedDoc("", transform("a", q("input.whatever")), transform("b", q("steps.a.output * 1.5 > steps.a.output.size()"), "a")),
		"mixed list":            typedDoc("", transform("a", `[1, "'a'"]`), transform("b", q("steps.a.output[0] * 1.5"), "a")),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(doc); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
}

// TestTypeErrorsDoNotStopStoredVersions: a version stored before
// expressions were type-checked still parses for running.
func TestTypeErrorsDoNotStopStoredVersions(t *testing.T) {
	doc := typedDoc(`{"type":"object","properties":{"n":{"type":"integer"}}}`, transform("a", q("input.n * 2.0")))
	if _, err := Parse(doc); err == nil {
		t.Fatal("Parse accepted a type error")
	}
	if _, err := ParseStored(doc); err != nil {
		t.Fatalf("ParseStored: %v", err)
	}
}

func TestNumberRule(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"i":120,"f":120.0,"e":1.2e2,"d":2.5,"neg":-3,"big":9223372036854775807,"huge":1e19,"tiny":1e-3,"l":[1,1.5],"s":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"i": int64(120), "f": int64(120), "e": int64(120), "d": 2.5, "neg": int64(-3),
		"big": int64(9223372036854775807), "huge": 1e19, "tiny": 1e-3, "l": []any{int64(1), 1.5}, "s": "1"}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("DecodeJSON = %#v, want %#v", v, want)
	}
	// Every Go number type, as the API and Postgres hand them over.
	got := NormalizeJSON(map[string]any{"a": json.Number("7"), "b": float64(7), "c": 7, "d": float32(0.5), "e": uint64(1 << 63), "f": []any{float64(2)}})
	want = map[string]any{"a": int64(7), "b": int64(7), "c": int64(7), "d": 0.5, "e": float64(1 << 63), "f": []any{int64(2)}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("NormalizeJSON = %#v, want %#v", got, want)
	}
	// A double written by Go and read back is the same number, so the
	// rule gives it the same type whichever way it came.
	for _, f := range []float64{240, 2.5, 1e21, -0.5, 1 << 62} {
		b, _ := json.Marshal(f)
		back, _ := DecodeJSON(b)
		if NormalizeJSON(f) != back {
			t.Errorf("%v: in memory %#v, read back %#v", f, NormalizeJSON(f), back)
		}
	}
}

// TestDeclaredDoublesStayDoubles: values declared double (a schema
// "number", a double expression) are doubles at run time even when
// integral, in memory or read back.
func TestDeclaredDoublesStayDoubles(t *testing.T) {
	d, err := Parse(typedDoc(`{"type":"object","properties":{"price":{"type":"number"},"n":{"type":"integer"},"prices":{"type":"array","items":{"type":"number"}},"o":{"type":"object","properties":{"p":{"type":"number"}}}}}`,
		transform("a", `{"half":"input.price / 2.0","n":"input.n","list":"[1.0, 2.0]","lit":3.0}`)))
	if err != nil {
		t.Fatal(err)
	}
	in := d.InputValue(map[string]any{"price": json.Number("4"), "n": float64(3), "prices": []any{float64(1), 2.5}, "o": map[string]any{"p": 2}, "other": float64(1)})
	want := map[string]any{"price": 4.0, "n": int64(3), "prices": []any{1.0, 2.5}, "o": map[string]any{"p": 2.0}, "other": int64(1)}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("InputValue = %#v, want %#v", in, want)
	}
	out, err := EvalOutput("$.steps[0].output", d.Steps[0].Output, Env{Input: in})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(out)
	if string(raw) != `{"half":2,"list":[1,2],"lit":3,"n":3}` {
		t.Errorf("stored output %s: numbers keep their JSON form", raw)
	}
	back := d.OutputValue("a", raw)
	wantOut := map[string]any{"half": 2.0, "lit": int64(3), "list": []any{1.0, 2.0}, "n": int64(3)}
	if !reflect.DeepEqual(back, wantOut) {
		t.Errorf("OutputValue = %#v, want %#v", back, wantOut)
	}
	// The dependents' arithmetic works on the values read back.
	for expr, want := range map[string]any{
		"steps.a.output.half * 1.5":    3.0,
		"steps.a.output.n + 1":         int64(4),
		"steps.a.output.list[1] + 0.5": 2.5,
		"steps.a.output.lit * 2":       int64(6),
	} {
		v, err := Eval("$.output", expr, Env{Steps: map[string]any{"a": map[string]any{"output": back}}})
		if err != nil || v != want {
			t.Errorf("%s = %#v, %v; want %#v", expr, v, err, want)
		}
	}
}

// TestRuntimeErrorsNamePathAndTypes: an evaluation that fails names the
// expression's path and the types it failed on.
func TestRuntimeErrorsNamePathAndTypes(t *testing.T) {
	env := Env{Input: map[string]any{"name": "ada", "n": int64(2), "o": map[string]any{}, "l": []any{}}}
	tests := []struct{ expr, want string }{
		{"input.name * 2", `evaluate "input.name * 2" at $.steps[1].output.x: no such overload (string * int)`},
		{"1 + input.name * 2", `no such overload (string * int in input.name * 2)`},
		{"size(input.n)", `(size(int))`},
		{"input.name.startsWith(input.n)", `(string.startsWith(int))`},
		{"input.n / 0", `division by zero (int / int)`},
		{"input.o.missing + 1", `no such key: missing (selecting a field of a map in input.o.missing)`},
		{"input.l[3]", `(list[int])`},
	}
	for _, tt := range tests {
		_, err := Eval("$.steps[1].output.x", tt.expr, env)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "at $.steps[1].output.x") {
			t.Errorf("%s: error %v, want it to contain %q and the path", tt.expr, err, tt.want)
		}
	}
	if _, err := EvalOutput("$.steps[0].output", json.RawMessage(`{"a":{"b":["input.name * 2"]}}`), env); err == nil || !strings.Contains(err.Error(), "at $.steps[0].output.a.b[0]") {
		t.Errorf("transform leaf error %v, want the leaf's path", err)
	}
	if _, err := EvalBool("$.steps[0].if", "input.n", env); err == nil || !strings.Contains(err.Error(), "at $.steps[0].if: got int, want bool") {
		t.Errorf("EvalBool error %v", err)
	}
}
