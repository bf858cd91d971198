package drift

import "testing"

func TestCompareNamesBreakingChangesOfReadFields(t *testing.T) {
	learned := Of(map[string]any{"subject": "a", "n": int64(1), "items": []any{map[string]any{"name": "x"}}, "meta": map[string]any{"k": "v"}})
	next := Of(map[string]any{"n": "1", "items": []any{}, "extra": true, "meta": "gone"})
	changes := Compare(learned, next, []string{"body.subject", "body.items[].name", "body.meta.k"})
	got := map[string]Change{}
	for _, c := range changes {
		got[c.Path] = c
	}
	if c := got["body.subject"]; c.Kind != Removed || !c.Breaking {
		t.Errorf("subject: %+v", c)
	}
	if c := got["body.n"]; c.Kind != Retyped || c.Breaking || c.From != "number" || c.To != "string" {
		t.Errorf("n: %+v", c)
	}
	if _, ok := got["body.items[].name"]; ok {
		t.Errorf("an empty array must not remove its element paths: %+v", changes)
	}
	if c := got["body.meta"]; c.Kind != Retyped || !c.Breaking {
		t.Errorf("meta: %+v", c)
	}
	if _, ok := got["body.meta.k"]; ok {
		t.Errorf("only the retyped ancestor is reported: %+v", changes)
	}
	if c := got["body.extra"]; c.Kind != Added || c.Breaking {
		t.Errorf("extra: %+v", c)
	}
	if len(Breaking(changes)) != 2 {
		t.Errorf("breaking: %+v", Breaking(changes))
	}
}

func TestHashIgnoresValues(t *testing.T) {
	a := Of(map[string]any{"a": "x", "b": []any{int64(1), int64(2)}})
	b := Of(map[string]any{"b": []any{int64(7)}, "a": "y"})
	if a.Hash() != b.Hash() {
		t.Fatal("same paths and types must hash alike")
	}
	if a.Hash() == Of(map[string]any{"a": "x"}).Hash() {
		t.Fatal("different shapes must differ")
	}
}
