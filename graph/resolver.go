// Package graph is Sluice's GraphQL layer: the schema, the generated
// executable schema, thin resolvers that call internal/engine, and the error
// presenter. Resolvers hold no domain logic.
package graph

import (
	"github.com/sluicehq/sluice/internal/engine"
)

// Resolver is the root resolver.
type Resolver struct {
	Engine *engine.Engine
}
