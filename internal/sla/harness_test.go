package sla_test

// The SLA tests run the real run state machine, webhook outbox and SLA
// service against a real Postgres (internal/testdb), on the app role's
// pool so RLS applies, with one injected clock for all three. Only the
// queue (a Dispatcher) and the escalator are replaced, by recorders.

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/environment"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/runs"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/sla"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "slatest", &testDB))
}

type dispatcher struct{}

func (dispatcher) Dispatch(context.Context, []tasks.Task) error { return nil }

// escalations records the escalator's calls and knows one policy id.
type escalations struct {
	mu    sync.Mutex
	calls []string
	known string
	fail  bool // IncidentOpened fails (and with it the sweep's transaction)
}

func (e *escalations) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, s)
}

func (e *escalations) IncidentOpened(_ context.Context, _ *ent.Client, _ string, inc *ent.Incident, _ time.Time) error {
	if e.fail {
		return errors.New("escalation unavailable")
	}
	e.add("opened " + *inc.EscalationPolicyID)
	return nil
}

func (e *escalations) IncidentAcknowledged(_ context.Context, _ *ent.Client, _ string, inc *ent.Incident, by string, _ time.Time) error {
	e.add("acknowledged by " + by)
	return nil
}

func (e *escalations) IncidentResolved(_ context.Context, _ *ent.Client, _ string, inc *ent.Incident, by string, _ time.Time) error {
	e.add("resolved by " + by)
	return nil
}

func (e *escalations) PolicyExists(_ context.Context, _ *ent.Client, id string) (bool, error) {
	return id == e.known, nil
}

type h struct {
	t        *testing.T
	clock    *testdb.Clock
	runs     *runs.Service
	sla      *sla.Service
	hooks    *webhook.Service
	ctl      *control.Service
	esc      *escalations
	tenantID string
	envID    string
	ctx      context.Context
}

func newH(t *testing.T) *h {
	t.Helper()
	tenantID, err := testDB.Tenant(context.Background(), "sla test")
	if err != nil {
		t.Fatal(err)
	}
	x := newHFor(t, tenantID)
	x.in(func(ctx context.Context, c *ent.Client) error {
		// Tests set their own policies: drop the manifest's default.
		_, err = x.sla.DeletePolicy(ctx, x.defaultPolicy(ctx, c))
		return err
	})
	return x
}

// newHFor is newH for an existing tenant, its policies as they are.
func newHFor(t *testing.T, tenantID string) *h {
	t.Helper()
	ctx := context.Background()
	clk := testdb.NewClock(time.Now())
	loopback := egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	v := vault.New(secrets.DevKeyRing())
	hooks := webhook.NewService(webhook.ServiceOptions{Client: testDB.App, Vault: v, Dispatcher: dispatcher{}, Now: clk.Now,
		Options: webhook.Options{Egress: loopback}})
	esc := &escalations{known: "esc_known"}
	s := sla.New(sla.Options{Client: testDB.App, Events: hooks, Escalator: esc, Now: clk.Now, Batch: 50})
	e := runs.New(runs.Options{Vault: v, Client: testDB.App, Dispatcher: dispatcher{}, Outbox: hooks, SLA: s,
		Executor: steps.NewExecutor(egress.NewClient(loopback)), Now: clk.Now})
	x := &h{t: t, clock: clk, runs: e, sla: s, hooks: hooks, esc: esc, tenantID: tenantID,
		ctl: control.New(control.Options{Vault: v, Now: clk.Now}),
		ctx: viewer.NewContext(ctx, &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	x.in(func(ctx context.Context, c *ent.Client) error {
		env, err := c.Environment.Query().Where(environment.Name("development")).Only(ctx)
		if err != nil {
			return err
		}
		x.envID = env.ID
		return nil
	})
	return x
}

func (x *h) defaultPolicy(ctx context.Context, c *ent.Client) string {
	x.t.Helper()
	list, err := c.SLAPolicy.Query().All(ctx)
	if err != nil || len(list) != 1 {
		x.t.Fatalf("the manifest's default policy: %v, %d policies", err, len(list))
	}
	return list[0].ID
}

func (x *h) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	if err := x.try(fn); err != nil {
		x.t.Fatal(err)
	}
}

func (x *h) try(fn func(ctx context.Context, c *ent.Client) error) error {
	return store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error {
		return fn(ctx, ent.FromContext(ctx))
	})
}

func (x *h) as(subject string, roles ...string) *h {
	y := *x
	y.ctx = viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: x.tenantID, Subject: subject, Roles: roles})
	return &y
}

// deploy publishes and deploys a workflow in the development environment.
func (x *h) deploy(def map[string]any) string {
	x.t.Helper()
	var wfID string
	x.in(func(ctx context.Context, c *ent.Client) error {
		wf, err := x.ctl.CreateWorkflow(ctx, "wf", "wf-"+testdb.RandHex(4), "")
		if err != nil {
			return err
		}
		v, err := x.ctl.CreateWorkflowVersion(ctx, wf.ID, def)
		if err != nil {
			return err
		}
		if _, err := x.ctl.PublishWorkflowVersion(ctx, v.ID); err != nil {
			return err
		}
		if _, err := x.ctl.DeployWorkflowVersion(ctx, v.ID, x.envID); err != nil {
			return err
		}
		wfID = wf.ID
		return nil
	})
	return wfID
}

func (x *h) start(wfID string) *ent.Run {
	x.t.Helper()
	var r *ent.Run
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		r, err = x.runs.StartRun(ctx, runs.StartRunInput{WorkflowID: wfID, EnvironmentID: x.envID})
		return err
	})
	return r
}

func (x *h) policy(in sla.PolicyInput) *ent.SLAPolicy {
	x.t.Helper()
	var p *ent.SLAPolicy
	x.in(func(ctx context.Context, _ *ent.Client) (err error) {
		p, err = x.sla.CreatePolicy(ctx, in)
		return err
	})
	return p
}

func (x *h) incidents() []*ent.Incident {
	x.t.Helper()
	var out []*ent.Incident
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		out, err = c.Incident.Query().All(ctx)
		return err
	})
	return out
}

// deliveries counts the webhook deliveries of an event type.
func (x *h) deliveries(eventType string) int {
	x.t.Helper()
	var n int
	x.in(func(ctx context.Context, c *ent.Client) (err error) {
		n, err = c.WebhookDelivery.Query().Where(webhookdelivery.EventType(eventType)).Count(ctx)
		return err
	})
	return n
}

// endpoint registers a webhook endpoint for every event.
func (x *h) endpoint() {
	x.t.Helper()
	x.in(func(ctx context.Context, _ *ent.Client) error {
		_, _, err := x.hooks.CreateWebhookEndpoint(ctx, "http://127.0.0.1:9/hook", nil, "")
		return err
	})
}

func (x *h) sweep() sla.SweepReport {
	x.t.Helper()
	rep, err := x.sla.Sweep(context.Background())
	if err != nil {
		x.t.Fatal(err)
	}
	return rep
}

func ptr[T any](v T) *T { return &v }
