package protection

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/protectspec"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

func eventType(t string) eventtype.Type { return eventtype.Type(t) }

// RequestDeployment deploys a published version into an environment, or,
// when the environment requires approvals, opens a deployment approval
// request that applies the deploy once enough approvers agree. Exactly one
// of the results is set. Editors may request in any protected environment.
func (s *Service) RequestDeployment(ctx context.Context, versionID, environmentID string) (*ent.Deployment, *ent.ApprovalRequest, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, nil, err
	}
	wv, err := c.WorkflowVersion.Get(ctx, versionID)
	if ent.IsNotFound(err) {
		return nil, nil, &errs.Error{Code: errs.NotFound, Message: fmt.Sprintf("workflow version %q not found", versionID),
			Problems: []errs.Problem{{Path: "input.versionID", Message: "not found"}}}
	}
	if err != nil {
		return nil, nil, err
	}
	env, err := control.EnvironmentByID(ctx, c, environmentID, "input.environmentID")
	if err != nil {
		return nil, nil, err
	}
	if !control.RequiresApprovals(env) {
		dep, err := s.o.Control.DeployWorkflowVersion(ctx, versionID, environmentID)
		return dep, nil, err
	}
	if err := control.CheckDeployable(ctx, c, wv, env, "input.versionID", "input.environmentID"); err != nil {
		return nil, nil, err
	}
	// The version active already: nothing to approve, as a deploy of it
	// changes nothing.
	if cur, err := c.Deployment.Query().Where(deployment.WorkflowID(wv.WorkflowID), deployment.EnvironmentID(env.ID), deployment.Active(true)).Only(ctx); err == nil && cur.VersionID == wv.ID {
		return cur, nil, nil
	} else if err != nil && !ent.IsNotFound(err) {
		return nil, nil, err
	}
	if err := busy(ctx, c, wv.WorkflowID, env.ID); err != nil {
		return nil, nil, err
	}
	evidence, err := s.gates(ctx, c, env.Protection, wv, env, "input.versionID", "input.environmentID")
	if err != nil {
		return nil, nil, err
	}
	apr, err := s.open(ctx, c, v, env, wv, nil, evidence)
	return nil, apr, err
}

// RequestRelease opens the approval request of a release created in
// PENDING_APPROVAL (releases.Gate). The release starts progressing once
// enough approvers agree; a rejection or the expiry aborts it.
func (s *Service) RequestRelease(ctx context.Context, c *ent.Client, v *viewer.Viewer, r *ent.Release) error {
	env, err := c.Environment.Get(ctx, r.EnvironmentID)
	if err != nil {
		return err
	}
	wv, err := c.WorkflowVersion.Get(ctx, r.CandidateVersionID)
	if err != nil {
		return err
	}
	evidence, err := s.gates(ctx, c, env.Protection, wv, env, "input.candidateVersionID", "input.environmentID")
	if err != nil {
		return err
	}
	_, err = s.open(ctx, c, v, env, wv, r, evidence)
	return err
}

// busy refuses a request while another one, or a release, is under way
// for the workflow in the environment.
func busy(ctx context.Context, c *ent.Client, workflowID, envID string) error {
	if r, err := c.Release.Query().Where(release.WorkflowID(workflowID), release.EnvironmentID(envID),
		release.StateIn(release.StatePendingApproval, release.StateProgressing, release.StatePaused)).First(ctx); err == nil {
		return errs.E(errs.Conflict, "release %s of this workflow is %s in this environment; promote, roll back or abort it first", r.ID, r.State)
	} else if !ent.IsNotFound(err) {
		return err
	}
	if a, err := c.ApprovalRequest.Query().Where(approvalrequest.KindEQ(approvalrequest.KindDeployment), approvalrequest.WorkflowID(workflowID),
		approvalrequest.TargetEnvironmentID(envID), approvalrequest.StatusEQ(approvalrequest.StatusPending)).First(ctx); err == nil {
		return errs.E(errs.Conflict, "deployment request %s of this workflow already waits for approval in this environment", a.ID)
	} else if !ent.IsNotFound(err) {
		return err
	}
	return nil
}

// open writes a pending deployment approval request with the evidence as
// its context, audits it and sends deployment.approval_requested.
func (s *Service) open(ctx context.Context, c *ent.Client, v *viewer.Viewer, env *ent.Environment, wv *ent.WorkflowVersion, r *ent.Release, evidence map[string]any) (*ent.ApprovalRequest, error) {
	p := env.Protection
	now := s.o.Now()
	what := fmt.Sprintf("deploy version %d to %s", wv.Number, env.Name)
	if r != nil {
		what = fmt.Sprintf("release version %d in %s (%s)", wv.Number, env.Name, r.ID)
	}
	info := map[string]any{"environment": env.Name, "environmentKind": string(env.Kind), "versionNumber": wv.Number, "requestedBy": v.Subject}
	for k, x := range evidence {
		info[k] = x
	}
	q := c.ApprovalRequest.Create().
		SetKind(approvalrequest.KindDeployment).
		SetWorkflowID(wv.WorkflowID).SetVersionID(wv.ID).SetTargetEnvironmentID(env.ID).
		SetRequestedBy(v.Subject).SetRequiredApprovals(p.RequiredApprovals).
		SetApproverRoles(p.Roles()).SetOnTimeout(approvalrequest.OnTimeoutReject).
		SetExpiresAt(now.Add(p.Timeout())).SetMessage(what).SetContext(info).
		SetApprovals([]protectspec.Vote{}).SetCreatedAt(now).SetUpdatedAt(now)
	if r != nil {
		q.SetReleaseID(r.ID)
	}
	apr, err := q.Save(ctx)
	if err != nil {
		return nil, err
	}
	return apr, s.record(ctx, c, v.TenantID, "deployment.request", "ApprovalRequest", apr.ID, string(eventtype.DeploymentApprovalRequested), eventData(apr, nil))
}

func eventData(apr *ent.ApprovalRequest, extra map[string]any) map[string]any {
	d := map[string]any{"approvalRequestID": apr.ID, "workflowID": deref(apr.WorkflowID), "versionID": deref(apr.VersionID),
		"environmentID": deref(apr.TargetEnvironmentID), "requestedBy": deref(apr.RequestedBy), "requiredApprovals": apr.RequiredApprovals,
		"approvals": len(apr.Approvals), "status": string(apr.Status), "expiresAt": apr.ExpiresAt}
	if apr.ReleaseID != nil {
		d["releaseID"] = *apr.ReleaseID
	}
	if apr.DeploymentID != nil {
		d["deploymentID"] = *apr.DeploymentID
	}
	if ev, ok := apr.Context["evaluation"]; ok {
		d["evaluation"] = ev
	}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// DecideApproval records a decision on a DEPLOYMENT approval request;
// handled is false for any other request (step approvals belong to
// internal/runs), which the caller then decides itself. The requester's
// own decision is refused (FORBIDDEN); a rejection ends the request; the
// last approval needed applies the deploy (re-checking the freeze windows
// and that the version is still deployable) or starts the release.
func (s *Service) DecideApproval(ctx context.Context, id string, approve bool, comment string) (*ent.ApprovalRequest, bool, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleOperator, viewer.RoleViewer, viewer.RoleEditor)
	if err != nil {
		return nil, false, err
	}
	apr, err := c.ApprovalRequest.Query().Where(approvalrequest.ID(id), approvalrequest.KindEQ(approvalrequest.KindDeployment)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	if len(comment) > 2000 {
		return nil, true, errs.Invalid("input.comment", "must be at most 2000 characters")
	}
	if apr.Status != approvalrequest.StatusPending {
		return nil, true, errs.E(errs.Conflict, "approval request %s is already %s", id, apr.Status)
	}
	if deref(apr.RequestedBy) == v.Subject {
		return nil, true, errs.E(errs.Forbidden, "you requested this deployment: your own decision never counts; another approver (%s) must decide", strings.Join(apr.ApproverRoles, " or "))
	}
	if !v.Has(apr.ApproverRoles...) {
		return nil, true, errs.E(errs.Forbidden, "deciding this deployment needs one of the roles %s", strings.Join(apr.ApproverRoles, ", "))
	}
	if slices.ContainsFunc(apr.Approvals, func(x protectspec.Vote) bool { return x.Subject == v.Subject }) {
		return nil, true, errs.E(errs.Conflict, "you already approved request %s; it needs approvals from other approvers", id)
	}
	now := s.o.Now()
	if !approve {
		apr, err = s.end(ctx, c, v.TenantID, apr, approvalrequest.StatusRejected, v.Subject, comment, "rejected by "+v.Subject)
		return apr, true, err
	}
	votes := append(slices.Clone(apr.Approvals), protectspec.Vote{Subject: v.Subject, Roles: v.Roles, Comment: comment, At: now})
	if len(votes) < apr.RequiredApprovals {
		if apr, err = apr.Update().SetApprovals(votes).SetUpdatedAt(now).Save(ctx); err != nil {
			return nil, true, err
		}
		return apr, true, s.record(ctx, c, v.TenantID, "deployment.approve", "ApprovalRequest", apr.ID, "", eventData(apr, map[string]any{"by": v.Subject}))
	}
	apr, err = s.apply(ctx, c, v, apr, votes, comment, now)
	return apr, true, err
}

// apply carries out an approved request: the deploy, or the release's
// start. The gates that can change while a request waits are checked
// again: the freeze windows and that the version is still deployable.
func (s *Service) apply(ctx context.Context, c *ent.Client, v *viewer.Viewer, apr *ent.ApprovalRequest, votes []protectspec.Vote, comment string, now time.Time) (*ent.ApprovalRequest, error) {
	env, err := c.Environment.Get(ctx, deref(apr.TargetEnvironmentID))
	if err != nil {
		return nil, err
	}
	wv, err := c.WorkflowVersion.Get(ctx, deref(apr.VersionID))
	if err != nil {
		return nil, err
	}
	if err := control.CheckFreeze(env, now, "input.id"); err != nil {
		var e *errs.Error
		if errors.As(err, &e) {
			e.Message += "; approve again once it ends"
		}
		return nil, err
	}
	if err := control.CheckDeployable(ctx, c, wv, env, "input.id", "input.id"); err != nil {
		return nil, err
	}
	u := apr.Update().SetApprovals(votes).SetStatus(approvalrequest.StatusApproved).SetDecidedBy(v.Subject).SetDecidedAt(now).SetUpdatedAt(now)
	if comment != "" {
		u.SetComment(comment)
	}
	extra := map[string]any{"by": v.Subject}
	if apr.ReleaseID != nil {
		r, err := c.Release.Query().Where(release.ID(*apr.ReleaseID)).ForUpdate().Only(ctx)
		if err != nil {
			return nil, err
		}
		if r.State != release.StatePendingApproval {
			// Aborted while it waited: nothing to start.
			apr, err := apr.Update().SetStatus(approvalrequest.StatusCancelled).SetUpdatedAt(now).Save(ctx)
			if err != nil {
				return nil, err
			}
			return apr, s.record(ctx, c, v.TenantID, "deployment.cancel", "ApprovalRequest", apr.ID, "", eventData(apr, map[string]any{"reason": "release is " + string(r.State)}))
		}
		if r, err = r.Update().SetState(release.StateProgressing).SetStepStartedAt(now).SetUpdatedAt(now).Save(ctx); err != nil {
			return nil, err
		}
		if err := s.record(ctx, c, v.TenantID, "release.approve", "Release", r.ID, "", map[string]any{"releaseID": r.ID, "approvalRequestID": apr.ID, "state": string(r.State)}); err != nil {
			return nil, err
		}
	} else {
		if err := control.ActiveRelease(ctx, c, wv.WorkflowID, env.ID); err != nil {
			return nil, err
		}
		// The deployment is the requester's: approvers let it happen.
		as := *v
		as.Subject = deref(apr.RequestedBy)
		dep, prev, err := control.ActivateVersion(ctx, c, &as, wv.WorkflowID, env, wv.ID, now)
		if err != nil {
			return nil, err
		}
		u.SetDeploymentID(dep.ID)
		meta := map[string]any{"workflowID": wv.WorkflowID, "versionID": wv.ID, "number": wv.Number, "environment": env.Name,
			"environmentKind": string(env.Kind), "approvalRequestID": apr.ID, "approvedBy": subjects(votes)}
		if prev != nil && prev.ID != dep.ID {
			meta["previousVersionID"] = prev.VersionID
		}
		if err := s.record(ctx, c, v.TenantID, "workflow_version.deploy", "Deployment", dep.ID, "", meta); err != nil {
			return nil, err
		}
	}
	if apr, err = u.Save(ctx); err != nil {
		return nil, err
	}
	extra["approvedBy"] = subjects(votes)
	return apr, s.record(ctx, c, v.TenantID, "deployment.approve", "ApprovalRequest", apr.ID, string(eventtype.DeploymentApproved), eventData(apr, extra))
}

func subjects(votes []protectspec.Vote) []string {
	out := make([]string, 0, len(votes))
	for _, x := range votes {
		out = append(out, x.Subject)
	}
	return out
}

// end settles a request without applying it (rejected or expired) and
// aborts the release it holds, if any.
func (s *Service) end(ctx context.Context, c *ent.Client, tenantID string, apr *ent.ApprovalRequest, status approvalrequest.Status, by, comment, reason string) (*ent.ApprovalRequest, error) {
	now := s.o.Now()
	u := apr.Update().SetStatus(status).SetDecidedBy(by).SetDecidedAt(now).SetUpdatedAt(now)
	if comment != "" {
		u.SetComment(comment)
	}
	apr, err := u.Save(ctx)
	if err != nil {
		return nil, err
	}
	if apr.ReleaseID != nil {
		r, err := c.Release.Query().Where(release.ID(*apr.ReleaseID)).ForUpdate().Only(ctx)
		if err != nil {
			return nil, err
		}
		if r.State == release.StatePendingApproval {
			why := "deployment approval " + reason
			if r, err = r.Update().SetState(release.StateAborted).SetWeightPercent(0).SetReason(why).SetFinishedAt(now).SetFinishedBy(by).SetUpdatedAt(now).Save(ctx); err != nil {
				return nil, err
			}
			if err := s.record(ctx, c, tenantID, "release.abort", "Release", r.ID, string(eventtype.ReleaseAborted), map[string]any{
				"releaseID": r.ID, "workflowID": r.WorkflowID, "environmentID": r.EnvironmentID, "stableVersionID": r.StableVersionID,
				"candidateVersionID": r.CandidateVersionID, "state": string(r.State), "reason": why}); err != nil {
				return nil, err
			}
		}
	}
	t, action := eventtype.DeploymentRejected, "deployment.reject"
	if status == approvalrequest.StatusExpired {
		t, action = eventtype.DeploymentExpired, "deployment.expire"
	}
	return apr, s.record(ctx, c, tenantID, action, "ApprovalRequest", apr.ID, string(t), eventData(apr, map[string]any{"by": by, "comment": comment}))
}

// Expire marks every pending deployment request past its expiry EXPIRED
// (and aborts the releases they hold), tenant by tenant, each in its own
// transaction; it returns how many it expired. The expiry is the row's
// expires_at in Postgres: a restarted worker or an emptied Redis loses
// nothing, and the row lock with the status check expires each once.
func (s *Service) Expire(ctx context.Context) (int, error) {
	tenants, err := store.TenantIDs(ctx, s.o.Client)
	if err != nil {
		return 0, err
	}
	n := 0
	var all []error
	for _, tid := range tenants {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		err := store.InTenant(viewer.SystemContext(ctx, tid), s.o.Client, func(ctx context.Context) error {
			c := ent.FromContext(ctx)
			now := s.o.Now()
			due, err := c.ApprovalRequest.Query().Where(approvalrequest.KindEQ(approvalrequest.KindDeployment),
				approvalrequest.StatusEQ(approvalrequest.StatusPending), approvalrequest.ExpiresAtLTE(now)).
				Limit(500).ForUpdate().All(ctx)
			if err != nil {
				return err
			}
			for _, apr := range due {
				if _, err := s.end(ctx, c, tid, apr, approvalrequest.StatusExpired, "timeout", "", "expired after "+apr.ExpiresAt.Sub(apr.CreatedAt).String()); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			all = append(all, fmt.Errorf("tenant %s: %w", tid, err))
		}
	}
	return n, errors.Join(all...)
}

// ReleaseOf is the release an approval request holds, or nil.
func ReleaseOf(ctx context.Context, apr *ent.ApprovalRequest) (*ent.Release, error) {
	if apr.ReleaseID == nil {
		return nil, nil
	}
	r, err := ent.FromContext(ctx).Release.Get(ctx, *apr.ReleaseID)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return r, err
}

// DeploymentOf is the deployment an approved request made, or nil.
func DeploymentOf(ctx context.Context, apr *ent.ApprovalRequest) (*ent.Deployment, error) {
	if apr.DeploymentID == nil {
		return nil, nil
	}
	d, err := ent.FromContext(ctx).Deployment.Query().Where(deployment.ID(*apr.DeploymentID)).Only(ctx)
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return d, err
}

// ReleaseEnded is releases.Gate: a release rolled back or aborted while it
// waited for approvals cancels its pending request.
func (s *Service) ReleaseEnded(ctx context.Context, c *ent.Client, r *ent.Release) error {
	pending, err := c.ApprovalRequest.Query().Where(approvalrequest.KindEQ(approvalrequest.KindDeployment),
		approvalrequest.ReleaseID(r.ID), approvalrequest.StatusEQ(approvalrequest.StatusPending)).ForUpdate().All(ctx)
	if err != nil {
		return err
	}
	now := s.o.Now()
	for _, apr := range pending {
		if apr, err = apr.Update().SetStatus(approvalrequest.StatusCancelled).SetUpdatedAt(now).Save(ctx); err != nil {
			return err
		}
		if err := s.record(ctx, c, r.TenantID, "deployment.cancel", "ApprovalRequest", apr.ID, "", eventData(apr, map[string]any{"reason": "release is " + string(r.State)})); err != nil {
			return err
		}
	}
	return nil
}
