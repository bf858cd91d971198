// Package eventtype names the run events: the type of every RunEvent the run
// state machine writes, which subscriptions stream and webhooks deliver under
// the same name. This file is the one place an event type is spelled; the
// README's "Run events" list is checked against All.
package eventtype

import "slices"

// Type is a run event's type, dotted and lower case. The values are wire
// names (stored in the event log, streamed, chosen by webhook endpoints):
// never rename one.
type Type string

// Run events, in the order the README lists them.
const (
	// RunQueued: the run was created and its first steps queued.
	RunQueued Type = "run.queued"
	// RunStarted: the run's first step started.
	RunStarted Type = "run.started"
	// StepStarted: a step attempt started.
	StepStarted Type = "step.started"
	// StepSucceeded: a step finished with an output.
	StepSucceeded Type = "step.succeeded"
	// StepRetrying: a step attempt failed with a transient error and the
	// next attempt is scheduled.
	StepRetrying Type = "step.retrying"
	// StepFailed: a step failed for good (no attempt left, or an error that
	// is not retried).
	StepFailed Type = "step.failed"
	// StepSkipped: a step's `if` was false.
	StepSkipped Type = "step.skipped"
	// StepSkippedByOperator: an operator ended a failed or waiting step
	// with a supplied output (skipStep); the step counts as succeeded.
	StepSkippedByOperator Type = "step.skipped_by_operator"
	// StepRetriedByOperator: an operator ran a failed step again (retryStep).
	StepRetriedByOperator Type = "step.retried_by_operator"
	// StepWaiting: a delay step waits until its end, or a wait step for
	// its outside event.
	StepWaiting Type = "step.waiting"
	// StepReclaimed: a running step whose worker went silent was taken over
	// by another worker under the same attempt.
	StepReclaimed Type = "step.reclaimed"
	// StepLatencyBudgetExceeded: an attempt took longer than the step's
	// latencyBudget.
	StepLatencyBudgetExceeded Type = "step.latency_budget_exceeded"
	// StepResponseChanged: an http step's response had a new shape (fields
	// added, or changed where the workflow does not read them); once per
	// new shape and workflow version.
	StepResponseChanged Type = "step.response_changed"
	// BudgetExceeded: a model call was refused because it could pass the
	// run's or the tenant's budget.
	BudgetExceeded Type = "budget.exceeded"
	// ApprovalRequested: an approval step (or an uncertain call with
	// onUncertain "ask") waits for a decision.
	ApprovalRequested Type = "approval.requested"
	// ApprovalDecided: someone approved or rejected.
	ApprovalDecided Type = "approval.decided"
	// ApprovalExpired: an approval's timeout passed before a decision.
	ApprovalExpired Type = "approval.expired"
	// ApprovalEscalated: an open approval reached a level of its
	// escalation policy.
	ApprovalEscalated Type = "approval.escalated"
	// RunWaiting: every runnable step waits (an approval or a delay).
	RunWaiting Type = "run.waiting"
	// RunRunning: a waiting run moves again.
	RunRunning Type = "run.running"
	// RunResumed: a failed run was resumed.
	RunResumed Type = "run.resumed"
	// RunSucceeded: the run finished with its output.
	RunSucceeded Type = "run.succeeded"
	// RunFailed: the run failed.
	RunFailed Type = "run.failed"
	// RunCancelled: the run was cancelled.
	RunCancelled Type = "run.cancelled"
)

var all = [...]Type{
	RunQueued, RunStarted,
	StepStarted, StepSucceeded, StepRetrying, StepFailed, StepSkipped, StepSkippedByOperator, StepRetriedByOperator, StepWaiting,
	StepReclaimed, StepLatencyBudgetExceeded, BudgetExceeded, StepResponseChanged,
	ApprovalRequested, ApprovalDecided, ApprovalExpired, ApprovalEscalated,
	RunWaiting, RunRunning, RunResumed, RunSucceeded, RunFailed, RunCancelled,
}

// Tenant events: about a tenant's service levels, not about one run. They
// never enter a run's event log; webhooks deliver them (RecordEvent in the
// webhook package).
const (
	// SLABreached: an SLA objective was breached (a run past a deadline,
	// or a window objective that no longer holds).
	SLABreached Type = "sla.breached"
	// IncidentAcknowledged: someone acknowledged an incident.
	IncidentAcknowledged Type = "incident.acknowledged"
	// IncidentEscalated: an incident reached a level of its escalation
	// policy.
	IncidentEscalated Type = "incident.escalated"
	// IncidentResolved: an incident was resolved, by hand or because its
	// objective holds again.
	IncidentResolved Type = "incident.resolved"
	// EvaluationCompleted: an evaluation finished (completed, stopped by
	// its budget, cancelled or failed); its summary is in the payload.
	EvaluationCompleted Type = "evaluation.completed"
)

// Release and deployment events (internal/releases): tenant events, not
// run events.
const (
	// ReleaseStarted: a release began at its first step.
	ReleaseStarted Type = "release.started"
	// ReleaseProgressed: a release moved to its next step.
	ReleaseProgressed Type = "release.progressed"
	// ReleasePaused: a release was paused at its step.
	ReleasePaused Type = "release.paused"
	// ReleaseResumed: a paused release progresses again.
	ReleaseResumed Type = "release.resumed"
	// ReleasePromoted: the candidate became the deployment.
	ReleasePromoted Type = "release.promoted"
	// ReleaseRolledBack: new runs all go to the stable version again
	// (by hand or on an analysis breach).
	ReleaseRolledBack Type = "release.rolled_back"
	// ReleaseAborted: a release ended with no change to the deployment.
	ReleaseAborted Type = "release.aborted"
	// DeploymentRolledBack: the previously deployed version became
	// current again (rollbackDeployment).
	DeploymentRolledBack Type = "deployment.rolled_back"
)

// Deployment approval events (internal/protection): a deploy or release
// into a protected environment waits for approvals. Tenant events.
const (
	// DeploymentApprovalRequested: a deploy or release waits for approvals.
	DeploymentApprovalRequested Type = "deployment.approval_requested"
	// DeploymentApproved: enough approvals came in; the deploy was applied
	// (or the release started progressing).
	DeploymentApproved Type = "deployment.approved"
	// DeploymentRejected: an approver rejected the request.
	DeploymentRejected Type = "deployment.rejected"
	// DeploymentExpired: the request waited past its timeout.
	DeploymentExpired Type = "deployment.expired"
)

// Connection events (internal/connections): tenant events about an oauth2
// credential's connection.
const (
	// CredentialReauthorizationRequired: a connection's grant was refused
	// (revoked, invalid_grant); runs needing it wait until someone
	// authorizes it again. Sent once per transition.
	CredentialReauthorizationRequired Type = "credential.reauthorization_required"
	// CredentialExpiring: a connection's refresh failed and will be tried
	// again; its token expires at expiresAt unless a refresh succeeds.
	CredentialExpiring Type = "credential.expiring"
	// CredentialRestored: a degraded or reauthorization_required
	// connection is active again.
	CredentialRestored Type = "credential.restored"
)

// Pause events (internal/pause): tenant events about a workflow paused or
// resumed in an environment.
const (
	// WorkflowPaused: a workflow was paused in an environment (or its
	// pause changed mode or reason).
	WorkflowPaused Type = "workflow.paused"
	// WorkflowResumed: a paused workflow was resumed in an environment.
	WorkflowResumed Type = "workflow.resumed"
)

var tenant = [...]Type{SLABreached, IncidentAcknowledged, IncidentEscalated, IncidentResolved,
	ReleaseStarted, ReleaseProgressed, ReleasePaused, ReleaseResumed, ReleasePromoted, ReleaseRolledBack, ReleaseAborted,
	DeploymentRolledBack, EvaluationCompleted,
	DeploymentApprovalRequested, DeploymentApproved, DeploymentRejected, DeploymentExpired,
	CredentialReauthorizationRequired, CredentialExpiring, CredentialRestored,
	WorkflowPaused, WorkflowResumed}

// webhook are the types webhooks deliver.
var webhook = [...]Type{
	RunStarted, RunSucceeded, RunFailed, RunCancelled,
	StepFailed, StepResponseChanged,
	ApprovalRequested, ApprovalDecided, ApprovalExpired, ApprovalEscalated,
	BudgetExceeded,
	SLABreached, IncidentAcknowledged, IncidentEscalated, IncidentResolved,
	ReleaseStarted, ReleaseProgressed, ReleasePaused, ReleaseResumed, ReleasePromoted, ReleaseRolledBack, ReleaseAborted,
	DeploymentRolledBack,
	EvaluationCompleted,
	DeploymentApprovalRequested, DeploymentApproved, DeploymentRejected, DeploymentExpired,
	CredentialReauthorizationRequired, CredentialExpiring, CredentialRestored,
	WorkflowPaused, WorkflowResumed,
}

// All returns every run event type, in the README's order.
func All() []Type { return slices.Clone(all[:]) }

// Tenant returns the tenant events (not run events) in the README's order.
func Tenant() []Type { return slices.Clone(tenant[:]) }

// Webhook returns the types webhooks deliver (the `webhookEventTypes`
// query); an endpoint may subscribe to these only.
func Webhook() []Type { return slices.Clone(webhook[:]) }

// Delivered reports whether webhooks deliver events of type t. It
// allocates nothing: it runs for every event a run writes.
func (t Type) Delivered() bool { return slices.Contains(webhook[:], t) }

// ForRunStatus returns the event written when a run moves to status (a
// run status as stored: "queued", "running", "waiting", "succeeded",
// "failed", "cancelled"), or "" for any other string. A run's first move
// to running is RunStarted, not RunRunning: the state machine decides that.
func ForRunStatus(status string) Type {
	switch status {
	case "queued":
		return RunQueued
	case "running":
		return RunRunning
	case "waiting":
		return RunWaiting
	case "succeeded":
		return RunSucceeded
	case "failed":
		return RunFailed
	case "cancelled":
		return RunCancelled
	}
	return ""
}
