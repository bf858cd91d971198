package control

import (
	"context"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/escalationpolicy"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
)

// checkEscalationRefs checks, at publish, that each escalation policy an
// approval step names exists in the tenant. A policy deleted later starts
// no escalation at run time (internal/escalation).
func checkEscalationRefs(ctx context.Context, c *ent.Client, def *definition.Definition) error {
	refs := def.EscalationRefs()
	if len(refs) == 0 {
		return nil
	}
	names := make([]string, 0, len(refs))
	for _, r := range refs {
		names = append(names, r.Policy)
	}
	found, err := c.EscalationPolicy.Query().Where(escalationpolicy.NameIn(names...)).
		Select(escalationpolicy.FieldName).Strings(ctx)
	if err != nil {
		return err
	}
	var problems []errs.Problem
	for _, r := range refs {
		if !slices.Contains(found, r.Policy) {
			problems = append(problems, errs.Problem{Path: "$.steps[" + strconv.Itoa(r.Index) + "].escalation",
				Message: "no escalation policy named " + strconv.Quote(r.Policy)})
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the definition's approval steps name unknown escalation policies", problems)
	}
	return nil
}
