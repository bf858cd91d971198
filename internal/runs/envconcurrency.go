package runs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/store"
)

// A workflow's concurrency setting per environment (internal/concurrency
// owns workflow_concurrencies and setWorkflowConcurrency) overrides the
// definition's `concurrency` for the workflow's runs there. Where it is
// read:
//   - startRun: a column of the deployment statement (no statement of its
//     own); other starts (replays, child runs) read it with one statement
//     when their definition or the environment may limit them;
//   - a keyed run's finish and the keys' sweep: sluice_release_key reads
//     the override itself (migration 20261128121700_workflow_concurrency_rls),
//     so the finish pays nothing for it.

// envConcurrencySelect is a workflow's override in an environment as JSON
// text, or NULL: a column of startRun's deployment statement.
func envConcurrencySelect(tenantCol, workflowCol, envCol string) string {
	return "(SELECT json_build_object('limit', c.run_limit, 'key', c.key, 'onLimit', c.on_limit)::text FROM workflow_concurrencies c WHERE c.tenant_id = " +
		tenantCol + " AND c.workflow_id = " + workflowCol + " AND c.environment_id = " + envCol + ")"
}

// parseEnvConcurrency reads envConcurrencySelect's value; nil without an
// override.
func parseEnvConcurrency(s *string) (*definition.Concurrency, error) {
	if s == nil || *s == "" {
		return nil, nil
	}
	var c definition.Concurrency
	if err := json.Unmarshal([]byte(*s), &c); err != nil {
		return nil, fmt.Errorf("workflow concurrency override: %w", err)
	}
	return &c, nil
}

// effectiveConcurrency is the concurrency setting of the new run: the
// environment's override if there is one, else the definition's. startRun
// read the override already (nr.concurrencyRead); other live starts read
// it here.
func (e *Service) effectiveConcurrency(ctx context.Context, r *ent.Run, nr newRun) (*definition.Concurrency, error) {
	if nr.concurrencyRead {
		if nr.concurrency != nil {
			return nr.concurrency, nil
		}
		return nr.def.Concurrency, nil
	}
	q, err := store.Raw(ctx)
	if err != nil {
		return nil, err
	}
	var s *string
	err = q.QueryRow(ctx, "SELECT "+envConcurrencySelect("$1", "$2", "$3"), r.TenantID, r.WorkflowID, r.EnvironmentID).Scan(&s)
	if err != nil {
		return nil, fmt.Errorf("workflow concurrency override: %w", err)
	}
	o, err := parseEnvConcurrency(s)
	if err != nil || o != nil {
		return o, err
	}
	return nr.def.Concurrency, nil
}

// definitionLimit is the definition's concurrency limit, or 0 without one:
// sluice_release_key applies the environment's override if there is one,
// and without either releases every run waiting for the key.
func definitionLimit(def *definition.Definition) int {
	if def.Concurrency == nil {
		return 0
	}
	return def.Concurrency.Limit
}
