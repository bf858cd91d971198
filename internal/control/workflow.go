package control

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/workflow"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/access"
	"github.com/sluicehq/sluice/internal/audit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// CreateWorkflow adds a workflow. Editors and above.
func (s *Service) CreateWorkflow(ctx context.Context, name, slug, description string) (*ent.Workflow, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	if name == "" || len(name) > 200 {
		return nil, errs.Invalid("input.name", "must be 1 to 200 characters")
	}
	if !slugPattern.MatchString(slug) {
		return nil, errs.Invalid("input.slug", "must be lower case letters, digits and dashes, starting with a letter, at most 63 characters")
	}
	if len(description) > 2000 {
		return nil, errs.Invalid("input.description", "must be at most 2000 characters")
	}
	wf, err := c.Workflow.Create().SetName(name).SetSlug(slug).SetDescription(description).SetCreatedBy(v.Subject).Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "workflow "+slug)
	}
	return wf, audit.Record(ctx, c, "workflow.create", "Workflow", wf.ID, map[string]any{"slug": slug})
}

// parseDefinition validates a definition and returns it with its canonical
// map form. Validation problems carry paths prefixed with input.definition.
func parseDefinition(raw map[string]any) (*definition.Definition, map[string]any, error) {
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, nil, errs.Invalid("input.definition", "is not JSON: %v", err)
	}
	def, err := definition.Parse(b)
	if err != nil {
		var ve *definition.ValidationError
		if errors.As(err, &ve) {
			problems := make([]errs.Problem, 0, len(ve.Problems))
			for _, p := range ve.Problems {
				problems = append(problems, errs.Problem{Path: p.Path, Message: p.Message})
			}
			return nil, nil, errs.InvalidAll(ve.Error(), problems)
		}
		return nil, nil, errs.Invalid("input.definition", "%v", err)
	}
	return def, raw, nil
}

// CreateWorkflowVersion stores a new draft version with the next number.
// The definition is validated now, so a draft that exists can be published.
func (s *Service) CreateWorkflowVersion(ctx context.Context, workflowID string, raw map[string]any) (*ent.WorkflowVersion, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	// The row lock serialises version numbering per workflow.
	wf, err := c.Workflow.Query().Where(workflow.ID(workflowID)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("workflow", workflowID)
	}
	if err != nil {
		return nil, err
	}
	def, raw, err := parseDefinition(raw)
	if err != nil {
		return nil, err
	}
	if err := checkLimitRefs(ctx, c, def); err != nil {
		return nil, err
	}
	last, err := wf.QueryVersions().Order(ent.Desc(workflowversion.FieldNumber)).First(ctx)
	next := 1
	switch {
	case err == nil:
		next = last.Number + 1
	case !ent.IsNotFound(err):
		return nil, err
	}
	wv, err := c.WorkflowVersion.Create().
		SetWorkflowID(wf.ID).
		SetNumber(next).
		SetSchemaVersion(def.SchemaVersion).
		SetDefinition(raw).
		SetContentHash(def.Hash()).
		SetCreatedBy(v.Subject).
		Save(ctx)
	if err != nil {
		return nil, store.ConflictIfExists(err, "version "+strconv.Itoa(next))
	}
	return wv, audit.Record(ctx, c, "workflow_version.create", "WorkflowVersion", wv.ID, map[string]any{"workflowID": wf.ID, "number": next, "contentHash": wv.ContentHash})
}

// UpdateWorkflowVersion replaces the definition of a draft. Published
// versions are immutable: CONFLICT.
func (s *Service) UpdateWorkflowVersion(ctx context.Context, id string, raw map[string]any) (*ent.WorkflowVersion, error) {
	_, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	wv, err := versionForUpdate(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if wv.Status == workflowversion.StatusPublished {
		return nil, errs.E(errs.Conflict, "workflow version %s is published and immutable; create a new version", id)
	}
	def, raw, err := parseDefinition(raw)
	if err != nil {
		return nil, err
	}
	if err := checkLimitRefs(ctx, c, def); err != nil {
		return nil, err
	}
	wv, err = wv.Update().SetDefinition(raw).SetSchemaVersion(def.SchemaVersion).SetContentHash(def.Hash()).Save(ctx)
	if err != nil {
		return nil, err
	}
	return wv, audit.Record(ctx, c, "workflow_version.update", "WorkflowVersion", wv.ID, map[string]any{"contentHash": wv.ContentHash})
}

// PublishWorkflowVersion validates a draft again and freezes it. Publishing a
// published version returns it unchanged.
func (s *Service) PublishWorkflowVersion(ctx context.Context, id string) (*ent.WorkflowVersion, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	wv, err := versionForUpdate(ctx, c, id)
	if err != nil {
		return nil, err
	}
	if wv.Status == workflowversion.StatusPublished {
		return wv, nil
	}
	def, _, err := parseDefinition(wv.Definition)
	if err != nil {
		return nil, err
	}
	if def.Hash() != wv.ContentHash {
		return nil, errs.E(errs.Internal, "content hash mismatch on version %s", id)
	}
	if err := checkWorkflowRefs(ctx, c, wv.WorkflowID, def); err != nil {
		return nil, err
	}
	if err := checkEscalationRefs(ctx, c, def); err != nil {
		return nil, err
	}
	if err := checkLimitRefs(ctx, c, def); err != nil {
		return nil, err
	}
	wv, err = wv.Update().
		SetStatus(workflowversion.StatusPublished).
		SetPublishedAt(s.now()).
		SetPublishedBy(v.Subject).
		Save(ctx)
	if err != nil {
		return nil, err
	}
	return wv, audit.Record(ctx, c, "workflow_version.publish", "WorkflowVersion", wv.ID, map[string]any{"contentHash": wv.ContentHash, "number": wv.Number})
}

func versionForUpdate(ctx context.Context, c *ent.Client, id string) (*ent.WorkflowVersion, error) {
	wv, err := c.WorkflowVersion.Query().Where(workflowversion.ID(id)).ForUpdate().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("workflow version", id)
	}
	return wv, err
}

// DeployWorkflowVersion makes a published version the one new runs use in an
// environment. Production deploys need an admin; the previous deployment is
// kept as history.
func (s *Service) DeployWorkflowVersion(ctx context.Context, versionID, environmentID string) (*ent.Deployment, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	wv, err := c.WorkflowVersion.Get(ctx, versionID)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("workflow version", versionID)
	}
	if err != nil {
		return nil, err
	}
	env, err := EnvironmentByID(ctx, c, environmentID, "input.environmentID")
	if err != nil {
		return nil, err
	}
	return s.deploy(ctx, c, v, deployRequest{version: wv, env: env, versionPath: "input.versionID", envPath: "input.environmentID", action: "workflow_version.deploy"})
}

// PromoteDeployment deploys the version current in one environment to
// another, through the same checks as DeployWorkflowVersion.
func (s *Service) PromoteDeployment(ctx context.Context, fromEnvironmentID, toEnvironmentID, workflowID string) (*ent.Deployment, error) {
	v, c, err := access.Authorize(ctx, viewer.RoleEditor)
	if err != nil {
		return nil, err
	}
	from, err := EnvironmentByID(ctx, c, fromEnvironmentID, "input.fromEnvironmentID")
	if err != nil {
		return nil, err
	}
	to, err := EnvironmentByID(ctx, c, toEnvironmentID, "input.toEnvironmentID")
	if err != nil {
		return nil, err
	}
	if from.ID == to.ID {
		return nil, errs.Invalid("input.toEnvironmentID", "is the environment promoted from")
	}
	if _, err := c.Workflow.Get(ctx, workflowID); ent.IsNotFound(err) {
		return nil, &errs.Error{Code: errs.NotFound, Message: "workflow " + quote(workflowID) + " not found", Problems: []errs.Problem{{Path: "input.workflowID", Message: "not found"}}}
	} else if err != nil {
		return nil, err
	}
	cur, err := c.Deployment.Query().
		Where(deployment.WorkflowID(workflowID), deployment.EnvironmentID(from.ID), deployment.Active(true)).
		WithVersion().Only(ctx)
	if ent.IsNotFound(err) {
		return nil, errs.Invalid("input.fromEnvironmentID", "no version of this workflow is deployed in environment %s", from.Name)
	}
	if err != nil {
		return nil, err
	}
	return s.deploy(ctx, c, v, deployRequest{version: cur.Edges.Version, env: to, versionPath: "input.fromEnvironmentID", envPath: "input.toEnvironmentID",
		action: "deployment.promote", extra: map[string]any{"fromEnvironmentID": from.ID, "fromEnvironment": from.Name}})
}

// deployRequest is one deploy: a version into an environment, the input
// paths errors name, and the audit action (a deploy or a promotion).
type deployRequest struct {
	version              *ent.WorkflowVersion
	env                  *ent.Environment
	versionPath, envPath string
	action               string
	extra                map[string]any
}

// deploy is the one function every deploy goes through (deployWorkflowVersion,
// promoteDeployment): role, archive, publication, credentials and declared
// variables are checked here, so that gates added later apply to all.
func (s *Service) deploy(ctx context.Context, c *ent.Client, v *viewer.Viewer, r deployRequest) (*ent.Deployment, error) {
	wv, env := r.version, r.env
	if env.Kind == environment.KindProduction && !v.Has(viewer.RoleAdmin) && !RequiresApprovals(env) {
		return nil, errs.E(errs.Forbidden, "deploying to production needs the admin role")
	}
	if err := CheckDeployable(ctx, c, wv, env, r.versionPath, r.envPath); err != nil {
		return nil, err
	}
	if s.gate != nil {
		if err := s.gate.CheckDeploy(ctx, c, v, wv, env, r.versionPath, r.envPath); err != nil {
			return nil, err
		}
	}
	if err := ActiveRelease(ctx, c, wv.WorkflowID, env.ID); err != nil {
		return nil, err
	}
	dep, prev, err := ActivateVersion(ctx, c, v, wv.WorkflowID, env, wv.ID, s.now())
	if err != nil {
		return nil, err
	}
	if prev != nil && prev.ID == dep.ID {
		return dep, nil
	}
	var prevVersion *string
	if prev != nil {
		prevVersion = &prev.VersionID
	}
	meta := map[string]any{"workflowID": wv.WorkflowID, "versionID": wv.ID, "number": wv.Number, "environment": env.Name, "environmentKind": string(env.Kind)}
	if prevVersion != nil {
		meta["previousVersionID"] = *prevVersion
	}
	for k, x := range r.extra {
		meta[k] = x
	}
	return dep, audit.Record(ctx, c, r.action, "Deployment", dep.ID, meta)
}

// CheckDeployable refuses to make wv run in env when env is archived, wv
// is a draft, or env lacks a credential or a required variable wv names
// (VALIDATION at versionPath or envPath, or at the definition's path).
// Every way a version comes to run in an environment checks it: deploys,
// promotions, releases (their candidate) and rollbacks.
func CheckDeployable(ctx context.Context, c *ent.Client, wv *ent.WorkflowVersion, env *ent.Environment, versionPath, envPath string) error {
	if env.ArchivedAt != nil {
		return ArchivedError(env, envPath, "deploys")
	}
	if wv.Status != workflowversion.StatusPublished {
		return errs.Invalid(versionPath, "version %d is a draft; publish it first", wv.Number)
	}
	def, _, err := parseDefinition(wv.Definition)
	if err != nil {
		return err
	}
	if err := checkCredentials(ctx, c, def, env.ID); err != nil {
		return err
	}
	if err := checkLimitRefs(ctx, c, def); err != nil {
		return err
	}
	return checkVariables(ctx, c, def, env)
}

// checkVariables makes sure the environment sets every variable the
// definition requires without a default, with the declared types.
func checkVariables(ctx context.Context, c *ent.Client, def *definition.Definition, env *ent.Environment) error {
	if len(def.Vars) == 0 {
		return nil
	}
	vars, err := EnvironmentVariables(ctx, c, env)
	if err != nil {
		return err
	}
	found := def.CheckVars(vars)
	if len(found) == 0 {
		return nil
	}
	problems := make([]errs.Problem, 0, len(found))
	names := make([]string, 0, len(found))
	for _, p := range found {
		problems = append(problems, errs.Problem{Path: "$.vars." + p.Name, Message: p.Message + " (environment " + env.Name + ")"})
		names = append(names, p.Name)
	}
	return errs.InvalidAll("environment "+env.Name+" does not satisfy the variables the version declares: "+strings.Join(names, ", "), problems)
}

// checkCredentials makes sure every credential a definition names (a
// step's own, an llm step's fallbacks', a map step's inner step's) exists
// in the target environment.
func checkCredentials(ctx context.Context, c *ent.Client, def *definition.Definition, envID string) error {
	var problems []errs.Problem
	check := func(path, name string) error {
		if name == "" {
			return nil
		}
		ok, err := c.Credential.Query().Where(credential.EnvironmentID(envID), credential.Name(name)).Exist(ctx)
		if err != nil {
			return err
		}
		if !ok {
			problems = append(problems, errs.Problem{
				Path:    path,
				Message: "credential " + quote(name) + " does not exist in the target environment",
			})
		}
		return nil
	}
	var checkStep func(path string, s *definition.Step) error
	checkStep = func(path string, s *definition.Step) error {
		if err := check(path+".credential", s.Credential); err != nil {
			return err
		}
		for k, f := range s.Fallbacks {
			if err := check(path+".fallbacks["+strconv.Itoa(k)+"].credential", f.Credential); err != nil {
				return err
			}
		}
		if s.Step != nil { // a map step's inner step
			return checkStep(path+".step", s.Step)
		}
		return nil
	}
	for i := range def.Steps {
		if err := checkStep("$.steps["+strconv.Itoa(i)+"]", &def.Steps[i]); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the definition names credentials missing from the environment", problems)
	}
	return nil
}
