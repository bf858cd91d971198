package runs

import (
	"context"
	"strconv"
	"sync"

	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/envvars"
)

// varsCache holds environments' variables versions, read once per process:
// a version is immutable, so a run's attempts, resumes and replays read it
// from memory after the first (no round trip on the hot path). Keys include
// the tenant; the set is bounded and cleared when full.
type varsCache struct {
	mu sync.Mutex
	m  map[string][]envvars.Variable
}

const maxCachedVarsVersions = 10_000

func (c *varsCache) get(key string) ([]envvars.Variable, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok
}

func (c *varsCache) put(key string, v []envvars.Variable) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedVarsVersions {
		c.m = map[string][]envvars.Variable{}
	}
	c.m[key] = v
}

// loadVars reads the variables of the run's recorded version (none for
// version 0), from the cache when it holds them.
func (s *runState) loadVars(ctx context.Context) error {
	version := s.run.EnvVarsVersion
	if version == 0 {
		s.vars = nil
		return nil
	}
	key := s.run.TenantID + "/" + s.run.EnvironmentID + "/" + strconv.FormatInt(version, 10)
	if v, ok := s.e.vars.get(key); ok {
		s.vars = v
		return nil
	}
	v, err := control.VariablesAt(ctx, s.c, s.run.EnvironmentID, version)
	if err != nil {
		return err
	}
	s.e.vars.put(key, v)
	s.vars = v
	return nil
}

// varsValue is env.vars for the run's expressions: its recorded version's
// variables with the definition's defaults (definition.VarsValue).
func (s *runState) varsValue() map[string]any {
	if len(s.vars) == 0 && len(s.def.Vars) == 0 {
		return map[string]any{}
	}
	return s.def.VarsValue(s.vars)
}
