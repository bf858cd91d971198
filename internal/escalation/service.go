// Package escalation owns escalation policies (who is paged, and when, while
// an incident or an approval stays open) and the escalations that run them:
// a snapshot of the policy taken when a subject's escalation starts, level
// timers durable in Postgres (next_fire_at; the queue only wakes them and
// the reconciler re-sends lost wake-ups), the levels fired (webhook
// endpoints, members holding a role, PagerDuty Events API v2) and the
// PagerDuty outbox with its retries.
//
// Start, Acknowledge and Resolve run in the caller's tenant transaction: the
// SLA incidents call them in the incident's, the run state machine in the
// run's (approval steps that name a policy).
package escalation

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/escalation"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/internal/backoff"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

// DefaultPagerDutyURL is the PagerDuty Events API v2 endpoint.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// Options configure a Service.
type Options struct {
	Client     *ent.Client // app role pool, for worker-side transactions
	Vault      *vault.Vault
	Webhooks   *webhook.Service
	Dispatcher tasks.Dispatcher
	Log        *slog.Logger // if nil, slog.Default()
	// Now is the clock; if nil, the UTC wall clock at microseconds.
	Now func() time.Time
	// PagerDutyURL is where PagerDuty events are posted
	// (SLUICE_PAGERDUTY_EVENTS_URL). If empty, DefaultPagerDutyURL.
	PagerDutyURL string
	// Egress is the outbound policy PagerDuty calls pass.
	Egress egress.Config
	// PagerDutyRetry is the backoff between tries of a PagerDuty send. If
	// zero, 2s doubling up to 5m.
	PagerDutyRetry backoff.Exponential
	// PagerDutyMaxAttempts is how many tries a send gets. If zero, 10.
	PagerDutyMaxAttempts int
	// HTTPClient overrides the egress-guarded client (tests).
	HTTPClient *http.Client
}

// RunLocker is the run state machine's door for approval escalations: it
// takes the run's lock (before the escalation's, the order a decision
// takes them in), lets fn emit run events under it, and commits them with
// the run's seq rules (internal/runs).
type RunLocker interface {
	WithRunLock(ctx context.Context, c *ent.Client, runID string, fn func(emit func(stepID string, data map[string]any)) error) error
}

// Service manages escalation policies and runs escalations.
type Service struct {
	client     *ent.Client
	vault      *vault.Vault
	webhooks   *webhook.Service
	dispatcher tasks.Dispatcher
	runs       RunLocker
	log        *slog.Logger
	now        func() time.Time
	pdURL      string
	http       *http.Client
	retry      backoff.Exponential
	maxTries   int
}

// New returns a Service.
func New(o Options) *Service {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
	}
	if o.PagerDutyURL == "" {
		o.PagerDutyURL = DefaultPagerDutyURL
	}
	if o.PagerDutyRetry.Initial <= 0 {
		o.PagerDutyRetry = backoff.Exponential{Initial: 2 * time.Second, Max: 5 * time.Minute, Coefficient: 2}
	}
	if o.PagerDutyMaxAttempts <= 0 {
		o.PagerDutyMaxAttempts = 10
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = egress.NewClient(o.Egress)
	}
	return &Service{client: o.Client, vault: o.Vault, webhooks: o.Webhooks, dispatcher: o.Dispatcher, log: o.Log, now: o.Now,
		pdURL: o.PagerDutyURL, http: hc, retry: o.PagerDutyRetry, maxTries: o.PagerDutyMaxAttempts}
}

// SetRuns connects the run state machine, which is built after the
// Service (it starts approval escalations through it).
func (s *Service) SetRuns(r RunLocker) { s.runs = r }

// levelTask wakes a worker when an escalation's next level is due; its
// queue task id names the escalation, level and loop, so one level is
// enqueued once.
func levelTask(tenantID string, e *ent.Escalation) tasks.Task {
	t := tasks.Task{Kind: tasks.KindEscalation, TenantID: tenantID, RunID: e.RunID, ID: e.ID,
		Variant: "l" + strconv.Itoa(e.Level) + "." + strconv.Itoa(e.Loop)}
	if e.NextFireAt != nil {
		t.At = *e.NextFireAt
	}
	return t
}

// TaskLevel reads the level and loop a level task was sent for from its
// queue task id ("escalation.level:<id>:l<level>.<loop>[r...]"); -1, -1
// when the id does not say.
func TaskLevel(taskID string) (level, loop int) {
	i := strings.LastIndex(taskID, ":l")
	if i < 0 {
		return -1, -1
	}
	v := taskID[i+2:]
	if j := strings.IndexByte(v, 'r'); j >= 0 {
		v = v[:j]
	}
	a, b, ok := strings.Cut(v, ".")
	l, err1 := strconv.Atoi(a)
	lp, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return -1, -1
	}
	return l, lp
}

// sendTask wakes a worker for a PagerDuty send's next try.
func sendTask(tenantID string, p *ent.PagerDutySend) tasks.Task {
	t := tasks.Task{Kind: tasks.KindPagerDuty, TenantID: tenantID, ID: p.ID, Variant: "a" + strconv.Itoa(p.Attempts)}
	if p.NextAttemptAt != nil {
		t.At = *p.NextAttemptAt
	}
	return t
}

func (s *Service) dispatchAfterCommit(ctx context.Context, ts ...tasks.Task) {
	tasks.DispatchAfterCommit(ctx, s.dispatcher, s.log, ts)
}

// DueTasks lists, for the reconciler, the escalation levels and PagerDuty
// sends of one tenant that are past due by more than grace: their wake-up
// was lost (Redis wiped, a worker killed). Sending them again is safe: the
// queue rejects a duplicate id, and a level or a send re-checks its state
// under its row's lock.
func (s *Service) DueTasks(ctx context.Context, tenantID string, grace time.Duration) ([]tasks.Task, error) {
	now := s.now()
	var due []tasks.Task
	err := store.InTenant(viewer.SystemContext(ctx, tenantID), s.client, func(ctx context.Context) error {
		c := ent.FromContext(ctx)
		escs, err := c.Escalation.Query().Where(escalation.NextFireAtLTE(now.Add(-grace))).Limit(1000).All(ctx)
		if err != nil {
			return err
		}
		for _, e := range escs {
			due = append(due, levelTask(tenantID, e))
		}
		sends, err := c.PagerDutySend.Query().
			Where(pagerdutysend.StatusEQ(pagerdutysend.StatusPending), pagerdutysend.NextAttemptAtLTE(now.Add(-grace))).
			Limit(1000).All(ctx)
		if err != nil {
			return err
		}
		for _, p := range sends {
			due = append(due, sendTask(tenantID, p))
		}
		return nil
	})
	return due, err
}
