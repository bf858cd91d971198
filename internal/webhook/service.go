package webhook

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Service manages a tenant's webhook endpoints, records deliveries in the
// transaction of the run events they carry (Record), and makes delivery
// attempts (DeliverWebhook).
type Service struct {
	client     *ent.Client // app role pool, for worker-side transactions
	vault      *vault.Vault
	dispatcher tasks.Dispatcher
	opts       Options
	http       *http.Client // deliveries: egress-guarded, 15 s, no redirects
	log        *slog.Logger
	now        func() time.Time
	// endpointLists caches each tenant's enabled endpoints by its
	// webhooks_version (enabledEndpoints).
	endpointLists sync.Map // tenant id -> endpointList
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	Client     *ent.Client
	Vault      *vault.Vault
	Dispatcher tasks.Dispatcher
	Options    Options
	Log        *slog.Logger // if nil, slog.Default()
	// Now is the clock; if nil, the UTC wall clock at microseconds.
	Now func() time.Time
}

// NewService returns a Service.
func NewService(o ServiceOptions) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	return &Service{client: o.Client, vault: o.Vault, dispatcher: o.Dispatcher, opts: o.Options,
		http: egress.NewClient(egressForWebhooks(o.Options.Egress)), log: o.Log, now: o.Now}
}

// dispatchAfterCommit sends tasks once the transaction in ctx has
// committed: a worker must find the delivery it names.
func (s *Service) dispatchAfterCommit(ctx context.Context, ts []tasks.Task) {
	tasks.DispatchAfterCommit(ctx, s.dispatcher, s.log, ts)
}

// DueTasks lists the deliveries of one tenant whose next attempt is past
// due by more than grace (their wake-up was lost, or their worker died
// while sending), for the reconciler to send again.
func (s *Service) DueTasks(ctx context.Context, tenantID string, grace time.Duration) ([]tasks.Task, error) {
	now := s.now()
	var due []tasks.Task
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.client, func(ctx context.Context) error {
		list, err := ent.FromContext(ctx).WebhookDelivery.Query().
			Where(webhookdelivery.StatusEQ(webhookdelivery.StatusPending), webhookdelivery.NextAttemptAtLTE(now.Add(-grace))).
			Limit(1000).All(ctx)
		if err != nil {
			return err
		}
		for _, d := range list {
			due = append(due, deliveryTask(tenantID, d, now))
		}
		return nil
	})
	return due, err
}
