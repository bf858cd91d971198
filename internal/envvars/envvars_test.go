package envvars

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		typ  Type
		in   any
		want any
		bad  string
	}{
		{String, "x", "x", ""},
		{String, 1, nil, "not of type string"},
		{Integer, json.Number("9007199254740993"), int64(9007199254740993), ""},
		{Integer, 1.5, nil, "not of type integer"},
		{Number, 2, float64(2), ""},
		{Boolean, "true", nil, "not of type boolean"},
		{Boolean, false, false, ""},
		{JSON, nil, nil, "must not be null"},
		{JSON, map[string]any{"a": strings.Repeat("x", MaxValueBytes)}, nil, "bytes as JSON"},
		{"date", "x", nil, "type must be one of"},
	} {
		got, msg := Check(tc.typ, tc.in)
		if tc.bad != "" {
			if !strings.Contains(msg, tc.bad) {
				t.Errorf("Check(%s, %v) = %q, want a message with %q", tc.typ, tc.in, msg, tc.bad)
			}
			continue
		}
		if msg != "" || got != tc.want {
			t.Errorf("Check(%s, %v) = %#v, %q; want %#v", tc.typ, tc.in, got, msg, tc.want)
		}
	}
}

func TestVariableRoundTripKeepsIntegers(t *testing.T) {
	b, _ := json.Marshal([]Variable{{Name: "i", Type: Integer, Value: int64(9007199254740993)}})
	var back []Variable
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back[0].Value.(json.Number).String() != "9007199254740993" {
		t.Fatalf("value: %v", back[0].Value)
	}
}
