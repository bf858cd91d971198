package runs

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
)

// The state machine's doors to its neighbours: the queue (a
// tasks.Dispatcher), live subscribers (Publisher) and the webhook outbox
// (Outbox). Each is told about a change only once it is committed, or, for
// the outbox, inside the transaction that commits it.

// Publisher fans committed run changes out to subscribers in every process.
// Delivery is best effort: subscribers fill gaps from the event log.
type Publisher interface {
	Publish(ctx context.Context, n RunNotice)
}

// RunNotice tells live subscribers that a run changed: its committed events
// (in seq order) and its current status and cost.
type RunNotice struct {
	TenantID     string
	RunID        string
	Status       string
	CostMicroUSD int64
	Events       []*ent.RunEvent
}

// Outbox records the outbound notifications of a run's new events in the
// transaction (c) that commits them, and returns the tasks that deliver
// them, which the state machine sends after commit. endpointsVersion is
// the tenant's webhooks_version read with the run's lock, or -1 if unknown.
type Outbox interface {
	Record(ctx context.Context, c *ent.Client, r *ent.Run, endpointsVersion int64, events []*ent.RunEvent, now time.Time) ([]tasks.Task, error)
}

// stepTask is the task that wakes a worker for a step's attempt. A
// transform's task is marked CheckFirst; checkFirstPerRun keeps the mark only
// where another delivery's batch can have run the step (runReadyTransforms).
func stepTask(tenantID, runID, stepID, stepType, attemptID string, at time.Time) tasks.Task {
	return tasks.Task{Kind: tasks.KindStep, TenantID: tenantID, RunID: runID, StepID: stepID, ID: attemptID, At: at,
		CheckFirst: stepType == definition.StepTransform}
}

// dispatchAfterCommit sends tasks once the transaction in ctx has committed.
func (e *Service) dispatchAfterCommit(ctx context.Context, ts []tasks.Task) {
	tasks.DispatchAfterCommit(ctx, e.dispatcher, e.log, ts)
}

// publishAfterCommit tells subscribers about a run change once it is durable.
func (e *Service) publishAfterCommit(ctx context.Context, n RunNotice) {
	if e.publisher == nil {
		return
	}
	store.AfterCommit(ctx, func() { e.publisher.Publish(context.WithoutCancel(ctx), n) })
}

// SLA gives a new live run its service-level deadlines (internal/sla).
// version is the tenant's sla_version as read in the run's transaction,
// or -1 when unknown (SLA then reads it): the policies are cached under it,
// so a tenant's runs cost no round trip for their deadlines.
type SLA interface {
	RunDeadlines(ctx context.Context, c *ent.Client, tenantID string, version int64, workflowID, environmentID string, created time.Time) (RunDeadlines, error)
}

// RunDeadlines are a run's SLA deadlines and limits, each nil when no
// objective sets it.
type RunDeadlines struct {
	DeadlineAt      *time.Time // created + maxDuration
	QueueDeadlineAt *time.Time // created + maxQueueDelay
	MaxCostMicroUSD *int64     // maxCostPerRun
}

// CheckAt is when the SLA sweep must first look at the run: its earliest
// deadline, or nil.
func (d RunDeadlines) CheckAt() *time.Time {
	var at *time.Time
	for _, t := range []*time.Time{d.DeadlineAt, d.QueueDeadlineAt} {
		if t != nil && (at == nil || t.Before(*at)) {
			at = t
		}
	}
	if at == nil && d.MaxCostMicroUSD != nil {
		// Nothing to watch while it runs; its cost is judged once it
		// finishes (the sweep reads recently finished runs).
		return nil
	}
	return at
}

// SandboxPlanner adapts the calls of sandbox runs that evaluate a candidate
// (internal/evals): model overrides, and answers from the recording when
// the evaluation is recordedOnly. It is asked only about the http steps
// without sideEffect and the llm steps of sandbox runs (side-effect steps
// always answer from the recording).
type SandboxPlanner interface {
	StepPlan(ctx context.Context, c *ent.Client, r *ent.Run, step *definition.Step) (*SandboxStep, error)
}

// SandboxStep is how a sandbox run's step runs; nil means as defined, live.
type SandboxStep struct {
	// Step replaces the step's definition (a model override); nil keeps it.
	Step *definition.Step
	// FromRecording answers the step with the source run's recorded output
	// and calls nothing.
	FromRecording bool
	// Unrecorded, with FromRecording, says why the recording cannot answer
	// the call (another model, a step the source run did not run): the
	// attempt fails permanently with UnrecordedPrefix and this.
	Unrecorded string
}

// UnrecordedPrefix starts the error message of a sandbox step that the
// recording could not answer: an evaluation reads it as inconclusive.
const UnrecordedPrefix = "sandbox replay: unrecorded call: "

// SetSandboxPlanner sets the planner of sandbox runs (wired once both
// services exist).
func (e *Service) SetSandboxPlanner(p SandboxPlanner) { e.sandbox = p }
