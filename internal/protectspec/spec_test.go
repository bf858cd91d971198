package protectspec

import (
	"strings"
	"testing"
	"time"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestFrozenAtWeeklyAndOneOff(t *testing.T) {
	start, end := at("2026-12-24T00:00:00Z"), at("2026-12-27T00:00:00Z")
	p := &Protection{FreezeWindows: []FreezeWindow{
		{Name: "holiday", Start: &start, End: &end},
		// Every Friday 18:00 to 06:00 the next day, Paris time.
		{Name: "night", Days: []string{"FRI"}, From: "18:00", To: "06:00", TimeZone: "Europe/Paris"},
		{Name: "lunch", Days: []string{"WED"}, From: "12:00", To: "13:30"},
	}}
	for _, tc := range []struct {
		now  string
		name string
		ends string
	}{
		{"2026-12-25T10:00:00Z", "holiday", "2026-12-27T00:00:00Z"},
		{"2026-12-27T00:00:00Z", "", ""},                          // end is exclusive
		{"2026-11-27T17:30:00Z", "night", "2026-11-28T05:00:00Z"}, // Friday 18:30 in Paris (UTC+1)
		{"2026-11-28T04:59:00Z", "night", "2026-11-28T05:00:00Z"}, // Saturday 05:59 in Paris
		{"2026-11-28T05:00:00Z", "", ""},
		{"2026-11-27T16:59:00Z", "", ""}, // Friday 17:59 in Paris
		{"2026-11-25T12:00:00Z", "lunch", "2026-11-25T13:30:00Z"},
		{"2026-11-26T12:00:00Z", "", ""}, // Thursday
	} {
		f, ok := p.FrozenAt(at(tc.now))
		if ok != (tc.name != "") || (ok && (f.Window.Name != tc.name || !f.Ends.Equal(at(tc.ends)))) {
			t.Errorf("%s: got %v %+v, want %q until %s", tc.now, ok, f, tc.name, tc.ends)
		}
	}
}

func TestValidatePaths(t *testing.T) {
	start, before := at("2026-12-24T00:00:00Z"), at("2026-12-23T00:00:00Z")
	neg := -1
	p := &Protection{RequiredApprovals: -1, ApproverRoles: []string{"Admin", "boss"}, ApprovalTimeout: "3d",
		Evaluation:    &EvaluationRule{MaxRegressions: &neg},
		FreezeWindows: []FreezeWindow{{Start: &start, End: &before}, {Days: []string{"monday", "ı"}, From: "25:00", To: "06:00", TimeZone: "Nowhere/City"}, {}}}
	p.Normalize()
	got := map[string]bool{}
	for _, pr := range p.Validate("input") {
		got[pr.Path] = true
	}
	for _, want := range []string{"input.requiredApprovals", "input.approverRoles[1]", "input.approvalTimeout", "input.evaluation.maxRegressions",
		"input.freezeWindows[0].end", "input.freezeWindows[1].days[1]", "input.freezeWindows[1].from", "input.freezeWindows[1].timeZone", "input.freezeWindows[2]"} {
		if !got[want] {
			t.Errorf("no problem at %s: %v", want, got)
		}
	}
	if got["input.approverRoles[0]"] || got["input.freezeWindows[1].days[0]"] {
		t.Errorf("normalized values refused: %v", got)
	}
	if (&Protection{}).Active() || !strings.Contains((Freeze{Window: FreezeWindow{Name: "n", Days: []string{"MON"}, From: "01:00", To: "02:00"}}).Describe(), `"n"`) {
		t.Error("Active or Describe")
	}
}
