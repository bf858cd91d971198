package graph

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/apikey"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/auditlog"
	"github.com/sluicehq/sluice/ent/bulkoperation"
	"github.com/sluicehq/sluice/ent/bulkoperationitem"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/environmentvariableversion"
	"github.com/sluicehq/sluice/ent/escalation"
	"github.com/sluicehq/sluice/ent/escalationpolicy"
	"github.com/sluicehq/sluice/ent/evaluation"
	"github.com/sluicehq/sluice/ent/evaluationexample"
	entexport "github.com/sluicehq/sluice/ent/export"
	"github.com/sluicehq/sluice/ent/inboundevent"
	"github.com/sluicehq/sluice/ent/incident"
	"github.com/sluicehq/sluice/ent/mapitem"
	"github.com/sluicehq/sluice/ent/member"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/ent/modelprice"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/ent/ratelimit"
	"github.com/sluicehq/sluice/ent/release"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/schedule"
	"github.com/sluicehq/sluice/ent/scheduleaction"
	"github.com/sluicehq/sluice/ent/slabreach"
	"github.com/sluicehq/sluice/ent/slapolicy"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/ent/tenant"
	"github.com/sluicehq/sluice/ent/trigger"
	"github.com/sluicehq/sluice/ent/triggerdelivery"
	"github.com/sluicehq/sluice/ent/webhookattempt"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/ent/webhookendpoint"
	"github.com/sluicehq/sluice/ent/workflow"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/ids"
	"github.com/sluicehq/sluice/internal/store"
)

// nodeTables maps id prefixes of GraphQL-visible types to their tables.
// Types hidden from the API (credential versions) are deliberately absent.
var nodeTables = map[string]string{
	ids.Tenant:           tenant.Table,
	ids.Member:           member.Table,
	ids.APIKey:           apikey.Table,
	ids.Environment:      environment.Table,
	ids.Workflow:         workflow.Table,
	ids.WorkflowVersion:  workflowversion.Table,
	ids.Deployment:       deployment.Table,
	ids.Credential:       credential.Table,
	ids.AuditLog:         auditlog.Table,
	ids.Run:              run.Table,
	ids.StepRun:          steprun.Table,
	ids.StepAttempt:      stepattempt.Table,
	ids.MapItem:          mapitem.Table,
	ids.RunEvent:         runevent.Table,
	ids.ApprovalRequest:  approvalrequest.Table,
	ids.ModelPrice:       modelprice.Table,
	ids.ModelCall:        modelcall.Table,
	ids.WebhookEndpoint:  webhookendpoint.Table,
	ids.WebhookDelivery:  webhookdelivery.Table,
	ids.WebhookAttempt:   webhookattempt.Table,
	ids.InboundEvent:     inboundevent.Table,
	ids.EscalationPolicy: escalationpolicy.Table,
	ids.Escalation:       escalation.Table,
	ids.PagerDutySend:    pagerdutysend.Table,
	ids.SLAPolicy:        slapolicy.Table,
	ids.Incident:         incident.Table,
	ids.SLABreach:        slabreach.Table,

	ids.EnvironmentVariableVersion: environmentvariableversion.Table,
	ids.Release:                    release.Table,
	ids.Evaluation:                 evaluation.Table,
	ids.EvaluationExample:          evaluationexample.Table,
	ids.RateLimit:                  ratelimit.Table,
	ids.Schedule:                   schedule.Table,
	ids.ScheduleAction:             scheduleaction.Table,
	ids.Trigger:                    trigger.Table,
	ids.TriggerDelivery:            triggerdelivery.Table,
	ids.BulkOperation:              bulkoperation.Table,
	ids.BulkOperationItem:          bulkoperationitem.Table,
	ids.Export:                     entexport.Table,
}

const maxNodes = 100

func client(ctx context.Context) (*ent.Client, error) { return store.Client(ctx) }

// resolveNode returns the object with id, or nil when there is none in the
// viewer's tenant. Objects of other tenants are indistinguishable from ids
// that never existed.
func resolveNode(ctx context.Context, id string) (ent.Noder, error) {
	table, ok := nodeTables[ids.Prefix(id)]
	if !ok {
		return nil, nil
	}
	c, err := client(ctx)
	if err != nil {
		return nil, err
	}
	n, err := c.Noder(ctx, id, ent.WithFixedNodeType(table))
	if ent.IsNotFound(err) {
		return nil, nil
	}
	return n, err
}

func resolveNodes(ctx context.Context, list []string) ([]ent.Noder, error) {
	if len(list) > maxNodes {
		return nil, errs.Invalid("ids", "at most %d ids per call", maxNodes)
	}
	c, err := client(ctx)
	if err != nil {
		return nil, err
	}
	// One query per type, not per id: clients poll many runs at once.
	out := make([]ent.Noder, len(list))
	byTable := map[string][]int{}
	for i, id := range list {
		if table, ok := nodeTables[ids.Prefix(id)]; ok {
			byTable[table] = append(byTable[table], i)
		}
	}
	for table, idx := range byTable {
		group := make([]string, len(idx))
		for k, i := range idx {
			group[k] = list[i]
		}
		// Ent reports an id it did not find as an error on the response;
		// here, as for node(id:), it is null (another tenant's id reads
		// like one that never existed). Its reports go to a response
		// context of their own, and only other errors are returned.
		nctx := graphql.WithResponseContext(ctx, graphql.DefaultErrorPresenter, nil)
		nodes, err := c.Noders(nctx, group, ent.WithFixedNodeType(table))
		if ent.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range graphql.GetErrors(nctx) {
			if e.Extensions["code"] != "NOT_FOUND" {
				return nil, e
			}
		}
		for k, i := range idx {
			out[i] = nodes[k]
		}
	}
	return out, nil
}
