package authz

import (
	"context"
	"testing"

	entgen "github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/privacy"
	"github.com/sluicehq/sluice/internal/viewer"
)

// BenchmarkRunChildrenRuleUnscoped is what the environment scope costs the
// worker (a system viewer of no environment) per query of a run's children.
func BenchmarkRunChildrenRuleUnscoped(b *testing.B) {
	ctx := viewer.SystemContext(context.Background(), "ten_x")
	rule := FilterRunChildrenRule()
	q := &entgen.StepRunQuery{}
	b.ReportAllocs()
	for b.Loop() {
		if err := rule.EvalQuery(ctx, q); err != privacy.Skip {
			b.Fatal(err)
		}
	}
}
