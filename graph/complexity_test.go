package graph

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/complexity"
	"github.com/vektah/gqlparser/v2"

	"github.com/sluicehq/sluice/graph/generated"
)

func cost(t *testing.T, q string) int {
	t.Helper()
	es := Costed(generated.NewExecutableSchema(generated.Config{Resolvers: &Resolver{}}))
	doc, errs := gqlparser.LoadQueryWithRules(es.Schema(), q, nil)
	if errs != nil {
		t.Fatal(errs)
	}
	return complexity.Calculate(context.Background(), es, doc.Operations[0], map[string]any{})
}

// TestComplexityCountsListSizes: a list's items cost as many times as the
// list can hold, so the cost follows what a query can return.
func TestComplexityCountsListSizes(t *testing.T) {
	small := cost(t, `{ runs(first: 1) { edges { node { id } } } }`)
	big := cost(t, `{ runs(first: 100) { edges { node { id } } } }`)
	if big < 90*small/2 {
		t.Errorf("first: 100 costs %d, first: 1 costs %d", big, small)
	}
	dash := cost(t, `{ runs(first: 50) { totalCount edges { node { id status costUSD createdAt
			workflow { name } environment { name }
			steps { stepID status attempts error { class message } attemptList { number status calls { host path } } }
			events(first: 5) { seq type } } } } }`)
	alias := `a%d: runs(first: 100) { edges { node { input output steps { output attemptList { calls { host path } } } events(first: 100) { seq type data } } } }`
	var attack strings.Builder
	attack.WriteString("{")
	for i := range 10 {
		fmt.Fprintf(&attack, " "+alias, i)
	}
	attack.WriteString(" }")
	tenAliases := cost(t, attack.String())
	one := cost(t, `{ runs(first: 1000) { edges { node { input output steps { output attemptList { calls { host path } } } events(first: 1000) { seq type data } } } } }`)
	asSent := 10 * one // ten aliases as the review sent them
	t.Logf("dashboard %d, ten aliases at first: 100 %d, one alias at first: 1000 %d", dash, tenAliases, one)
	if dash > limit || tenAliases <= limit || asSent <= limit {
		t.Errorf("the dashboard (%d) must pass and the attacks (%d, %d) fail the default limit %d", dash, tenAliases, asSent, limit)
	}
	if m := cost(t, `mutation { a: cancelRun(id: "run_1") { id } b: cancelRun(id: "run_2") { id } }`); m < 2*mutationCost {
		t.Errorf("two mutations cost %d", m)
	}
}

// limit is SLUICE_QUERY_COMPLEXITY's default.
const limit = 500000
