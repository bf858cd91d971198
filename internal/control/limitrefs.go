package control

import (
	"context"
	"slices"
	"strconv"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/concurrencylimit"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
)

// checkLimitRefs checks that each named concurrency limit a step names
// (`limit`) exists in the tenant: at create, update, publish and every
// deploy. A limit deleted later limits nothing: its steps run unlimited
// (internal/limits).
func checkLimitRefs(ctx context.Context, c *ent.Client, def *definition.Definition) error {
	refs := def.LimitRefs()
	if len(refs) == 0 {
		return nil
	}
	names := make([]string, 0, len(refs))
	for _, r := range refs {
		names = append(names, r.Name)
	}
	found, err := c.ConcurrencyLimit.Query().Where(concurrencylimit.NameIn(names...)).
		Select(concurrencylimit.FieldName).Strings(ctx)
	if err != nil {
		return err
	}
	var problems []errs.Problem
	for _, r := range refs {
		if !slices.Contains(found, r.Name) {
			problems = append(problems, errs.Problem{Path: "$.steps[" + strconv.Itoa(r.Index) + "].limit",
				Message: "no concurrency limit named " + strconv.Quote(r.Name) + " (setConcurrencyLimit creates one)"})
		}
	}
	if len(problems) > 0 {
		return errs.InvalidAll("the definition's steps name unknown concurrency limits", problems)
	}
	return nil
}
