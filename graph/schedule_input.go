package graph

import (
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/schedules"
)

func scheduleCreateInput(in model.CreateScheduleInput) schedules.Input {
	return schedules.Input{WorkflowID: in.WorkflowID, EnvironmentID: in.EnvironmentID, Cron: in.Cron, Every: in.Every, Offset: in.Offset,
		Timezone: in.Timezone, Input: in.Input, Overlap: in.Overlap, CatchupWindow: in.CatchupWindow, Jitter: in.Jitter,
		StartAt: in.StartAt, EndAt: in.EndAt, Paused: in.Paused, Note: in.Note}
}

func scheduleUpdateInput(in model.UpdateScheduleInput) schedules.Input {
	return schedules.Input{Cron: in.Cron, Every: in.Every, Offset: in.Offset,
		Timezone: in.Timezone, Input: in.Input, Overlap: in.Overlap, CatchupWindow: in.CatchupWindow, Jitter: in.Jitter,
		StartAt: in.StartAt, EndAt: in.EndAt, Paused: in.Paused, Note: in.Note}
}
