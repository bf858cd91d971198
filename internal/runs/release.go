package runs

import (
	"database/sql"
	"strconv"
	"strings"

	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/internal/releasespec"
)

// Releases (internal/releases) move a share of a workflow's new runs in an
// environment to a candidate version. startRun routes each new run itself,
// with no round trip of its own: the active release (progressing or
// paused) is read in the statement that reads the deployment, through the
// releases' unique partial index. Replays, resumes and child runs are not
// routed: a resumed run keeps its version, a replay runs the source's
// version (or the one asked for), and a child run started by a workflow
// step runs the version deployed for its workflow (its stable side).

// releaseSelect is a subselect of the active release of a deployment's
// workflow in its environment as "id/candidate version id/weight", or
// NULL (ids never hold '/').
func releaseSelect(tenantCol, workflowCol, envCol string) string {
	return "(SELECT r.id || '/' || r.candidate_version_id || '/' || r.weight_percent FROM releases r WHERE r.tenant_id = " + tenantCol +
		" AND r.workflow_id = " + workflowCol + " AND r.environment_id = " + envCol + " AND (r.state = 'PROGRESSING' OR r.state = 'PAUSED'))"
}

// route is where startRun sends a new run.
type route struct {
	versionID string
	releaseID *string
	side      *run.ReleaseSide
}

// routeRun picks the version of a new run: the deployed one, or under a
// release the side its routing key (the idempotency key when given, else
// the run id) hashes to.
func routeRun(deployed string, rel sql.NullString, runID string, idempotencyKey *string) route {
	rt := route{versionID: deployed}
	if !rel.Valid {
		return rt
	}
	parts := strings.Split(rel.String, "/")
	if len(parts) != 3 {
		return rt
	}
	weight, err := strconv.Atoi(parts[2])
	if err != nil {
		return rt
	}
	key := runID
	if idempotencyKey != nil {
		key = *idempotencyKey
	}
	side := run.ReleaseSideStable
	if releasespec.Candidate(parts[0], key, weight) {
		side, rt.versionID = run.ReleaseSideCandidate, parts[1]
	}
	rt.releaseID, rt.side = &parts[0], &side
	return rt
}
