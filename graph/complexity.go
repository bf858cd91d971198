package graph

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
)

// listEstimates is the cost multiplier of lists that take no first/last: the
// number of items a query should expect (a run has a handful of steps, a step
// a few attempts, an attempt one or two calls).
var listEstimates = map[string]int{
	"Run.steps":                   10,
	"StepRun.attemptList":         3,
	"StepRun.calls":               3,
	"StepAttempt.calls":           3,
	"MapItem.calls":               3,
	"WebhookDelivery.attemptList": 10,
	"Query.deadLetter":            5,
	"DeadLetterGroup.runs":        20,
}

// defaultListEstimate is the multiplier of other lists of objects.
const defaultListEstimate = 10

// Costed wraps the executable schema so that the complexity limit counts
// what a query can return: every field costs 1, and a list multiplies the
// cost of one item by its length: first/last (or the default page) for
// connections and Run.events, the ids of nodes, the limit of deadLetter, an
// estimate for other lists of objects (listEstimates). A connection's edges
// are counted once, at the connection.
func Costed(es graphql.ExecutableSchema) graphql.ExecutableSchema {
	return costedSchema{es}
}

type costedSchema struct{ graphql.ExecutableSchema }

func (s costedSchema) Complexity(ctx context.Context, typeName, field string, child int, args map[string]any) (int, bool) {
	def := s.Schema().Types[typeName]
	if def == nil {
		return 0, false
	}
	fd := def.Fields.ForName(field)
	if fd == nil {
		return 0, false
	}
	cost := listLength(typeName, fd, args) * (child + 1)
	if typeName == "Mutation" {
		cost += mutationCost
	}
	return cost, true
}

// listLength is how many items a field returns at most (1 for single values
// and lists of scalars, which are one value each).
func listLength(typeName string, fd *ast.FieldDefinition, args map[string]any) int {
	if fd.Arguments.ForName("first") != nil {
		n := defaultPage(typeName, fd.Name)
		first, hasFirst := intArg(args["first"])
		last, hasLast := intArg(args["last"])
		switch {
		case hasFirst && hasLast:
			n = max(first, last)
		case hasFirst:
			n = first
		case hasLast:
			n = last
		}
		return min(max(n, 1), MaxPageSize)
	}
	if fd.Name == "nodes" {
		switch ids := args["ids"].(type) {
		case []string:
			return max(len(ids), 1)
		case []any:
			return max(len(ids), 1)
		}
	}
	if fd.Type.Elem == nil || fd.Name == "edges" && strings.HasSuffix(typeName, "Connection") {
		return 1
	}
	if n, ok := listEstimates[typeName+"."+fd.Name]; ok {
		return n
	}
	if elem := fd.Type.Elem; elem != nil && isLeafName(elem.Name()) {
		return 1
	}
	return defaultListEstimate
}

// intArg reads an argument as the complexity calculator passes it: the raw
// literal or variable value.
func intArg(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case *int:
		if n != nil {
			return *n, true
		}
	case float64:
		return int(n), true
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	}
	return 0, false
}

func isLeafName(name string) bool {
	switch name {
	case "String", "Int", "Float", "Boolean", "ID", "Time", "Map", "Any", "Cursor":
		return true
	}
	return false
}
