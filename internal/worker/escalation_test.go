package worker

import (
	"context"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/vault"
)

// TestReconcileResendsLostEscalationLevels: an escalation level whose
// wake-up is lost (Redis wiped, or the worker that held it killed) is sent
// again by the reconciler once past the grace, under the same task id; the
// level then fires once however often its task runs, and the next level's
// wake-up is queued.
func TestReconcileResendsLostEscalationLevels(t *testing.T) {
	x := newWorld(t)
	es := escalation.New(escalation.Options{Client: testDB.App, Vault: vault.New(secrets.DevKeyRing()), Webhooks: x.hooks,
		Dispatcher: x.d, Log: quietLog(), Now: x.clock.Now})
	x.w.SetEscalation(es)
	role := "operator"
	var e *ent.Escalation
	x.in(func(ctx context.Context, c *ent.Client) error {
		name := "lost"
		p, err := es.CreatePolicy(ctx, escalation.PolicyInput{Name: &name, Levels: []spec.Level{
			{Delay: "1s", Targets: []spec.Target{{Role: &role}}},
			{Delay: "1h", Targets: []spec.Target{{Role: &role}}},
		}})
		if err != nil {
			return err
		}
		e, err = es.Start(ctx, c, x.tenantID, p.ID, escalation.Subject{Kind: escalation.KindIncident, ID: "inc_lost", DedupKey: "k"}, x.clock.Now())
		return err
	})
	first := tasks.KindEscalation + ":" + e.ID + ":l0.0"
	x.wantIDs(QueueTimers, first+" pending")
	x.lose(QueueTimers)

	x.clock.Advance(time.Second)
	x.reconcile() // due, but within the grace
	x.wantIDs(QueueTimers)
	x.clock.Advance(grace + time.Second)
	x.reconcile()
	x.wantIDs(QueueTimers, first+" pending")
	x.lose(QueueTimers)

	// The task runs twice (a worker killed before asynq recorded it done).
	level, loop := escalation.TaskLevel(first)
	for range 2 {
		if err := es.FireDue(context.Background(), x.tenantID, e.ID, level, loop); err != nil {
			t.Fatal(err)
		}
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		got, err := c.Escalation.Get(ctx, e.ID)
		if err == nil && (len(got.Firings) != 1 || got.Level != 1) {
			t.Errorf("fired %d times, level %d", len(got.Firings), got.Level)
		}
		return err
	})
	x.wantIDs(QueueTimers, tasks.KindEscalation+":"+e.ID+":l1.0 pending")
	x.reconcile()
	x.wantIDs(QueueTimers, tasks.KindEscalation+":"+e.ID+":l1.0 pending")
}
