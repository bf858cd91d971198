package graph

import (
	"context"
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
	attack := cost(t, `{ runs(first: 100) { edges { node { input output steps { output attemptList { calls { host path } } } events(first: 100) { seq type data } } } } }`)
	t.Logf("dashboard %d, one alias of the attack %d", dash, attack)
	if dash > 50000 || attack <= 50000 {
		t.Errorf("dashboard %d must pass and the attack %d fail the default limit 50000", dash, attack)
	}
}
