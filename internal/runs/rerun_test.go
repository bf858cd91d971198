package runs

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
)

func TestMergePatch(t *testing.T) {
	doc := map[string]any{"a": "b", "c": map[string]any{"d": "e", "f": "g"}, "keep": 1}
	patch := map[string]any{"a": "z", "c": map[string]any{"f": nil, "h": "i"}, "new": []any{1}}
	got := MergePatch(doc, patch)
	want := map[string]any{"a": "z", "c": map[string]any{"d": "e", "h": "i"}, "keep": 1, "new": []any{1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergePatch = %v, want %v", got, want)
	}
	if doc["a"] != "b" || doc["c"].(map[string]any)["f"] != "g" {
		t.Fatalf("MergePatch changed its input: %v", doc)
	}
	// RFC 7396: a non-object value replaces an object, and an object
	// replaces a scalar.
	got = MergePatch(map[string]any{"x": map[string]any{"y": 1}, "s": "t"}, map[string]any{"x": "flat", "s": map[string]any{"u": nil, "v": 2}})
	want = map[string]any{"x": "flat", "s": map[string]any{"v": 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("MergePatch replacing = %v, want %v", got, want)
	}
}

func TestSameSteps(t *testing.T) {
	def := func(steps ...definition.Step) *definition.Definition { return &definition.Definition{Steps: steps} }
	a := definition.Step{ID: "a", Type: definition.StepHTTP}
	b := definition.Step{ID: "b", Type: definition.StepTransform}
	if err := sameSteps(def(a, b), def(b, a), "versionID"); err != nil {
		t.Fatalf("same steps in another order: %v", err)
	}
	err := sameSteps(def(a, b), def(a, definition.Step{ID: "b", Type: definition.StepLLM}, definition.Step{ID: "c", Type: definition.StepHTTP}), "versionID")
	if errs.CodeOf(err) != errs.Validation || !strings.Contains(err.Error(), "adds steps c") || !strings.Contains(err.Error(), "changes the type of steps b") {
		t.Fatalf("other steps: %v", err)
	}
	err = sameSteps(def(a, b), def(a), "options.versionID")
	if errs.CodeOf(err) != errs.Validation || !strings.Contains(err.Error(), "lacks steps b") {
		t.Fatalf("a missing step: %v", err)
	}
}
