package control

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/workflow"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
)

// checkWorkflowRefs checks, at publish, the workflows a definition's
// workflow steps start: each exists and has a published version, none is
// the definition's own workflow or leads back to it, and the chain of
// child runs, through each referenced workflow's latest published version,
// is at most definition.MaxRunDepth runs deep (the run of this version
// counting as 1). At run time the deployed versions are what count: a run
// whose workflow step would start a run deeper than that fails the step.
func checkWorkflowRefs(ctx context.Context, c *ent.Client, ownWorkflowID string, def *definition.Definition) error {
	refs := def.WorkflowRefs()
	if len(refs) == 0 {
		return nil
	}
	w := &refWalker{c: c, own: ownWorkflowID, defs: map[string]*definition.Definition{}}
	var problems []errs.Problem
	for _, r := range refs {
		path := "$.steps[" + strconv.Itoa(r.Index) + "].workflow"
		if r.Workflow == ownWorkflowID {
			problems = append(problems, errs.Problem{Path: path, Message: "a workflow step may not start its own workflow"})
			continue
		}
		chain, msg, err := w.deepest(ctx, r.Workflow, []string{ownWorkflowID})
		if err != nil {
			return err
		}
		if msg != "" {
			problems = append(problems, errs.Problem{Path: path, Message: msg})
			continue
		}
		if depth := 1 + len(chain); depth > definition.MaxRunDepth {
			problems = append(problems, errs.Problem{Path: path, Message: fmt.Sprintf(
				"child runs would nest %d deep (%s); at most %d are allowed", depth, strings.Join(append([]string{ownWorkflowID}, chain...), " → "), definition.MaxRunDepth)})
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the definition's workflow steps cannot start their workflows", problems)
	}
	return nil
}

// refWalker follows workflow references through latest published versions.
type refWalker struct {
	c    *ent.Client
	own  string
	defs map[string]*definition.Definition // latest published, by workflow id
}

// deepest returns the longest chain of workflows starting at wfID (wfID
// first), or a message saying why it cannot be followed. path holds the
// workflows above it; the walk stops past MaxRunDepth.
func (w *refWalker) deepest(ctx context.Context, wfID string, path []string) ([]string, string, error) {
	for _, p := range path {
		if p == wfID {
			return nil, fmt.Sprintf("workflow %s leads back to workflow %s (%s → %s)", path[len(path)-1], wfID, strings.Join(path, " → "), wfID), nil
		}
	}
	if len(path) > definition.MaxRunDepth {
		return []string{wfID}, "", nil // deep enough to refuse
	}
	d, msg, err := w.latest(ctx, wfID)
	if err != nil || msg != "" {
		return nil, msg, err
	}
	var best []string
	for _, r := range d.WorkflowRefs() {
		chain, msg, err := w.deepest(ctx, r.Workflow, append(path[:len(path):len(path)], wfID))
		if err != nil || msg != "" {
			return nil, msg, err
		}
		if len(chain) > len(best) {
			best = chain
		}
	}
	return append([]string{wfID}, best...), "", nil
}

// latest is the definition of wfID's latest published version.
func (w *refWalker) latest(ctx context.Context, wfID string) (*definition.Definition, string, error) {
	if d, ok := w.defs[wfID]; ok {
		return d, "", nil
	}
	ok, err := w.c.Workflow.Query().Where(workflow.ID(wfID)).Exist(ctx)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "workflow " + quote(wfID) + " does not exist", nil
	}
	wv, err := w.c.WorkflowVersion.Query().
		Where(workflowversion.WorkflowID(wfID), workflowversion.StatusEQ(workflowversion.StatusPublished)).
		Order(ent.Desc(workflowversion.FieldNumber)).First(ctx)
	if ent.IsNotFound(err) {
		return nil, "workflow " + quote(wfID) + " has no published version; publish it first", nil
	}
	if err != nil {
		return nil, "", err
	}
	d, _, err := parseDefinition(wv.Definition)
	if err != nil {
		return nil, "", fmt.Errorf("definition of %s: %w", wv.ID, err)
	}
	w.defs[wfID] = d
	return d, "", nil
}
