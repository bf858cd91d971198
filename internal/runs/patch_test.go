package runs

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/steprun"
)

// The in-memory copy of a step must equal what the UPDATE wrote: mirror
// applies every kind of change a mutation carries.
func TestMirrorAppliesSetAddedAndClearedFields(t *testing.T) {
	c := ent.NewClient()
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	msg := "boom"
	sr := &ent.StepRun{ID: "stp_1", StepID: "a", Status: steprun.StatusRunning, Attempts: 1, CostMicroUsd: 10, ErrorMessage: &msg}

	u := c.StepRun.UpdateOneID(sr.ID).
		SetStatus(steprun.StatusSucceeded).
		SetStartedAt(started).
		SetOutput(json.RawMessage(`{"v":1}`)).
		SetCurrentAttemptID("att_2").
		AddCostMicroUsd(5).
		ClearErrorMessage()
	b := c.StepRun.Update()
	if err := copyMutation(b.Mutation(), u.Mutation()); err != nil {
		t.Fatal(err)
	}
	got := *sr
	if err := mirror(&got, b.Mutation()); err != nil {
		t.Fatal(err)
	}
	if got.Status != steprun.StatusSucceeded {
		t.Errorf("status = %s", got.Status)
	}
	if got.StartedAt == nil || !got.StartedAt.Equal(started) {
		t.Errorf("started_at = %v", got.StartedAt)
	}
	if string(got.Output) != `{"v":1}` {
		t.Errorf("output = %s", got.Output)
	}
	if got.CurrentAttemptID == nil || *got.CurrentAttemptID != "att_2" {
		t.Errorf("current_attempt_id = %v", got.CurrentAttemptID)
	}
	if got.CostMicroUsd != 15 {
		t.Errorf("cost = %d, want 15", got.CostMicroUsd)
	}
	if got.ErrorMessage != nil {
		t.Errorf("error_message = %q, want cleared", *got.ErrorMessage)
	}
	if got.Attempts != 1 || got.StepID != "a" {
		t.Errorf("untouched fields changed: %+v", got)
	}
	if sr.Status != steprun.StatusRunning || sr.CostMicroUsd != 10 {
		t.Errorf("the original copy changed: %+v", sr)
	}
}

func TestMirrorRejectsUnknownColumns(t *testing.T) {
	type row struct {
		A int `json:"a,omitempty"`
	}
	c := ent.NewClient()
	u := c.StepRun.Update().SetStatus(steprun.StatusQueued)
	if err := mirror(&row{}, u.Mutation()); err == nil {
		t.Fatal("mirror of a column the struct lacks: no error")
	}
}
