package control

import (
	"context"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// ActivateVersion makes versionID the active deployment of workflowID in
// env, keeping the previous one as history, and returns the new deployment
// and the one it replaced (nil when none; when versionID is already
// active, both are that deployment and nothing changes). Every change of
// what an environment runs goes through it: deploys, the promotion of a
// release (internal/releases) and rollbackDeployment. Gates on protected
// environments (approvals, evaluations, freeze windows) belong here.
func ActivateVersion(ctx context.Context, c *ent.Client, v *viewer.Viewer, workflowID string, env *ent.Environment, versionID string, now time.Time) (dep, prev *ent.Deployment, err error) {
	wv, err := c.WorkflowVersion.Get(ctx, versionID)
	if err != nil {
		return nil, nil, err
	}
	if err := CheckDeployable(ctx, c, wv, env, "versionID", "environmentID"); err != nil {
		return nil, nil, err
	}
	prev, err = c.Deployment.Query().
		Where(deployment.WorkflowID(workflowID), deployment.EnvironmentID(env.ID), deployment.Active(true)).
		ForUpdate().Only(ctx)
	var prevVersion *string
	switch {
	case err == nil:
		if prev.VersionID == versionID {
			return prev, prev, nil
		}
		prevVersion = &prev.VersionID
		if err := prev.Update().SetActive(false).SetSupersededAt(now).Exec(ctx); err != nil {
			return nil, nil, err
		}
	case ent.IsNotFound(err):
		prev = nil
	default:
		return nil, nil, err
	}
	dep, err = c.Deployment.Create().
		SetWorkflowID(workflowID).
		SetEnvironmentID(env.ID).
		SetVersionID(versionID).
		SetNillablePreviousVersionID(prevVersion).
		SetDeployedBy(v.Subject).
		Save(ctx)
	if ent.IsConstraintError(err) {
		// The one active deployment per (workflow, environment) is unique:
		// a concurrent deploy committed its own between our read and write.
		return nil, nil, errs.E(errs.Conflict, "another deployment to %s committed first; retry", env.Name)
	}
	return dep, prev, err
}

// ActiveRelease refuses a deploy while a release of the workflow is under
// way in the environment: promote, roll back or abort it first.
func ActiveRelease(ctx context.Context, c *ent.Client, workflowID, environmentID string) error {
	r, err := c.Release.Query().Where(release.WorkflowID(workflowID), release.EnvironmentID(environmentID),
		release.StateIn(release.StatePendingApproval, release.StateProgressing, release.StatePaused)).First(ctx)
	if ent.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return errs.E(errs.Conflict, "release %s of this workflow is %s in this environment; promote, roll back or abort it first", r.ID, r.State)
}
