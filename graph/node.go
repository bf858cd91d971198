package graph

import (
	"context"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/apikey"
	"github.com/sluicehq/sluice/ent/approvalrequest"
	"github.com/sluicehq/sluice/ent/auditlog"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/deployment"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/member"
	"github.com/sluicehq/sluice/ent/modelcall"
	"github.com/sluicehq/sluice/ent/modelprice"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/runevent"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/ent/tenant"
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
	ids.Tenant:          tenant.Table,
	ids.Member:          member.Table,
	ids.APIKey:          apikey.Table,
	ids.Environment:     environment.Table,
	ids.Workflow:        workflow.Table,
	ids.WorkflowVersion: workflowversion.Table,
	ids.Deployment:      deployment.Table,
	ids.Credential:      credential.Table,
	ids.AuditLog:        auditlog.Table,
	ids.Run:             run.Table,
	ids.StepRun:         steprun.Table,
	ids.StepAttempt:     stepattempt.Table,
	ids.RunEvent:        runevent.Table,
	ids.ApprovalRequest: approvalrequest.Table,
	ids.ModelPrice:      modelprice.Table,
	ids.ModelCall:       modelcall.Table,
	ids.WebhookEndpoint: webhookendpoint.Table,
	ids.WebhookDelivery: webhookdelivery.Table,
	ids.WebhookAttempt:  webhookattempt.Table,
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
	out := make([]ent.Noder, len(list))
	for i, id := range list {
		n, err := resolveNode(ctx, id)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}
