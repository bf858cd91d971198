package definition

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func waitDoc(wait map[string]any) []byte {
	steps := []any{map[string]any{"id": "prep", "type": "transform", "output": "1"}, wait}
	b, _ := json.Marshal(map[string]any{"schemaVersion": 1, "steps": steps})
	return b
}

func TestParseWaitStep(t *testing.T) {
	d, err := Parse(waitDoc(map[string]any{"id": "paid", "type": "wait", "needs": []any{"prep"}, "event": "payment.settled",
		"match": "event.data.order == input.order && steps.prep.output == 1", "timeout": "24h", "onTimeout": "continue"}))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := d.StepByID("paid")
	if s.Event != "payment.settled" || s.WaitTimeout() != 24*time.Hour || s.OnTimeout != OnTimeoutContinue {
		t.Errorf("step: %+v", s)
	}
	if got := d.Reads("paid"); len(got) != 1 || got[0] != "prep" {
		t.Errorf("reads: %v", got)
	}
	d, err = Parse(waitDoc(map[string]any{"id": "paid", "type": "wait", "event": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if s, _ := d.StepByID("paid"); s.WaitTimeout() != MaxWaitTimeout || s.TimeoutAction() != OnTimeoutFail {
		t.Errorf("defaults: %+v", s)
	}
}

func TestParseWaitStepRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		wait map[string]any
		path string
	}{
		{"no event", map[string]any{"id": "w", "type": "wait"}, "$.steps[1].event"},
		{"empty event", map[string]any{"id": "w", "type": "wait", "event": ""}, "$.steps[1].event"},
		{"bad event name", map[string]any{"id": "w", "type": "wait", "event": "Payment Settled"}, "$.steps[1].event"},
		{"long event name", map[string]any{"id": "w", "type": "wait", "event": strings.Repeat("a", 101)}, "$.steps[1].event"},
		{"bad match", map[string]any{"id": "w", "type": "wait", "event": "e", "match": "event.data.("}, "$.steps[1].match"},
		{"match not bool", map[string]any{"id": "w", "type": "wait", "event": "e", "match": "'yes'"}, "$.steps[1].match"},
		{"match reads a step it does not need", map[string]any{"id": "w", "type": "wait", "event": "e", "match": "steps.prep.output == 1"}, "$.steps[1].match"},
		{"match unknown variable", map[string]any{"id": "w", "type": "wait", "event": "e", "match": "evt.data == 1"}, "$.steps[1].match"},
		{"bad timeout", map[string]any{"id": "w", "type": "wait", "event": "e", "timeout": "soon"}, "$.steps[1].timeout"},
		{"timeout too long", map[string]any{"id": "w", "type": "wait", "event": "e", "timeout": "721h"}, "$.steps[1].timeout"},
		{"bad onTimeout", map[string]any{"id": "w", "type": "wait", "event": "e", "onTimeout": "approve"}, "$.steps[1].onTimeout"},
		{"field of another type", map[string]any{"id": "w", "type": "wait", "event": "e", "duration": "1s"}, "$.steps[1].duration"},
		{"event on another type", map[string]any{"id": "w", "type": "delay", "duration": "1s", "event": "e"}, "$.steps[1].event"},
		{"continue on an approval", map[string]any{"id": "w", "type": "approval", "approvers": map[string]any{"roles": []any{"operator"}}, "onTimeout": "continue"}, "$.steps[1].onTimeout"},
		{"unknown step type", map[string]any{"id": "w", "type": "sleep"}, "$.steps[1].type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(waitDoc(tc.wait))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a validation error, got %v", err)
			}
			for _, p := range ve.Problems {
				if p.Path == tc.path {
					return
				}
			}
			t.Errorf("no problem at %s: %v", tc.path, ve)
		})
	}
}

func TestEvalMatch(t *testing.T) {
	env := Env{Input: map[string]any{"order": "o-1"}}
	ev := map[string]any{"name": "paid", "id": "e1", "data": map[string]any{"order": "o-1", "amount": 120.0}}
	ok, err := EvalMatch("event.data.order == input.order && event.data.amount > 100", env, ev)
	if err != nil || !ok {
		t.Fatalf("match: %v %v", ok, err)
	}
	ok, err = EvalMatch("event.data.order == 'o-2'", env, ev)
	if err != nil || ok {
		t.Fatalf("no match: %v %v", ok, err)
	}
	if _, err := EvalMatch("event.data.order", env, ev); err == nil {
		t.Error("a string result is not a match")
	}
	// A match is held to MatchCostLimit, far below other expressions.
	_, err = EvalMatch("lists.range(100000).all(i, i >= 0)", env, ev)
	if !errors.Is(err, ErrLimit) {
		t.Errorf("an expensive match: %v", err)
	}
}
