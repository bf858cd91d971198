package escalation_test

// The escalation's tests run on a real Postgres (a database of the package
// run's own, internal/testdb) with the app role (RLS on) and an injected
// clock they advance instead of waiting. The queue is a recorder: a task it
// drops is a wake-up lost (a worker killed, Redis wiped), and the level is
// found again by DueTasks as the reconciler would.

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/escalation"
	"github.com/sluicehq/sluice/ent/pagerdutysend"
	"github.com/sluicehq/sluice/ent/webhookdelivery"
	"github.com/sluicehq/sluice/internal/backoff"
	"github.com/sluicehq/sluice/internal/control"
	"github.com/sluicehq/sluice/internal/egress"
	"github.com/sluicehq/sluice/internal/errs"
	esc "github.com/sluicehq/sluice/internal/escalation"
	"github.com/sluicehq/sluice/internal/escalation/spec"
	"github.com/sluicehq/sluice/internal/secrets"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/tasks"
	"github.com/sluicehq/sluice/internal/testdb"
	"github.com/sluicehq/sluice/internal/vault"
	"github.com/sluicehq/sluice/internal/viewer"
	"github.com/sluicehq/sluice/internal/webhook"
)

var testDB *testdb.DB

func TestMain(m *testing.M) {
	os.Exit(testdb.Main(m, "escalationtest", &testDB))
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// recorder is the queue: it keeps what is dispatched.
type recorder struct {
	mu    sync.Mutex
	tasks []tasks.Task
}

func (r *recorder) Dispatch(_ context.Context, ts []tasks.Task) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tasks = append(r.tasks, ts...)
	return nil
}

// take returns and forgets the recorded tasks of kind.
func (r *recorder) take(kind string) []tasks.Task {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out, rest []tasks.Task
	for _, t := range r.tasks {
		if t.Kind == kind {
			out = append(out, t)
		} else {
			rest = append(rest, t)
		}
	}
	r.tasks = rest
	return out
}

// pdReceiver is a PagerDuty-shaped receiver on loopback: it answers with
// the statuses queued in codes (202 when none is left) and keeps the events.
type pdReceiver struct {
	mu     sync.Mutex
	codes  []int
	events []map[string]any
	srv    *httptest.Server
}

func newPDReceiver(t *testing.T) *pdReceiver {
	p := &pdReceiver{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		_ = json.NewDecoder(r.Body).Decode(&ev)
		p.mu.Lock()
		p.events = append(p.events, ev)
		code := http.StatusAccepted
		if len(p.codes) > 0 {
			code, p.codes = p.codes[0], p.codes[1:]
		}
		p.mu.Unlock()
		if code == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "7")
		}
		w.WriteHeader(code)
		_, _ = w.Write([]byte(`{"status":"success","message":"Event processed"}`))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *pdReceiver) got() []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.events)
}

type world struct {
	t        *testing.T
	clock    *testdb.Clock
	q        *recorder
	svc      *esc.Service
	ctl      *control.Service
	hooks    *webhook.Service
	pd       *pdReceiver
	tenantID string
	envID    string
	ctx      context.Context // the tenant's owner
}

func newWorld(t *testing.T) *world {
	t.Helper()
	clk := testdb.NewClock(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC))
	q := &recorder{}
	loopback := egress.Config{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	v := vault.New(secrets.DevKeyRing())
	hooks := webhook.NewService(webhook.ServiceOptions{Client: testDB.App, Vault: v, Dispatcher: q,
		Options: webhook.Options{Egress: loopback}, Log: quietLog(), Now: clk.Now})
	pd := newPDReceiver(t)
	svc := esc.New(esc.Options{Client: testDB.App, Vault: v, Webhooks: hooks, Dispatcher: q, Log: quietLog(), Now: clk.Now,
		PagerDutyURL: pd.srv.URL, Egress: loopback,
		PagerDutyRetry: backoff.Exponential{Initial: time.Second, Max: time.Minute, Coefficient: 2}, PagerDutyMaxAttempts: 3})
	tenantID, err := testDB.Tenant(context.Background(), "escalation test")
	if err != nil {
		t.Fatal(err)
	}
	x := &world{t: t, clock: clk, q: q, svc: svc, hooks: hooks, pd: pd, tenantID: tenantID,
		ctl: control.New(control.Options{Vault: v, Now: clk.Now}),
		ctx: viewer.NewContext(context.Background(), &viewer.Viewer{TenantID: tenantID, Subject: "user_owner", Roles: []string{viewer.RoleOwner}})}
	x.in(func(ctx context.Context, c *ent.Client) error {
		env, err := c.Environment.Query().First(ctx)
		if err == nil {
			x.envID = env.ID
		}
		return err
	})
	return x
}

// in runs fn in one transaction of the tenant as its owner.
func (x *world) in(fn func(ctx context.Context, c *ent.Client) error) {
	x.t.Helper()
	if err := x.try(fn); err != nil {
		x.t.Fatal(err)
	}
}

func (x *world) try(fn func(ctx context.Context, c *ent.Client) error) error {
	return store.InTenant(x.ctx, testDB.App, func(ctx context.Context) error { return fn(ctx, ent.FromContext(ctx)) })
}

// endpoint registers a webhook endpoint on a loopback URL that nothing
// reads (deliveries are asserted as rows).
func (x *world) endpoint() string {
	var id string
	x.in(func(ctx context.Context, c *ent.Client) error {
		ep, _, err := x.hooks.CreateWebhookEndpoint(ctx, "http://127.0.0.1:9/hook", []string{"run.failed"}, "")
		if err == nil {
			id = ep.ID
		}
		return err
	})
	return id
}

func (x *world) pagerDutyCredential() string {
	var id string
	x.in(func(ctx context.Context, c *ent.Client) error {
		cr, err := x.ctl.CreateCredential(ctx, x.envID, "pd-"+testdb.RandHex(3), credential.TypePagerduty, map[string]any{"routingKey": "R0UT1NGKEY"})
		if err == nil {
			id = cr.ID
		}
		return err
	})
	return id
}

func (x *world) policy(name string, repeat int, levels ...spec.Level) *ent.EscalationPolicy {
	var p *ent.EscalationPolicy
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		p, err = x.svc.CreatePolicy(ctx, esc.PolicyInput{Name: &name, Levels: levels, Repeat: &repeat})
		return err
	})
	return p
}

func (x *world) start(policyID, incidentID string) *ent.Escalation {
	var e *ent.Escalation
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		e, err = x.svc.Start(ctx, c, x.tenantID, policyID, esc.Subject{Kind: esc.KindIncident, ID: incidentID, DedupKey: "sla:" + incidentID,
			Summary: "maxDuration breached", Severity: "critical", Details: map[string]any{"workflowID": "wf_1"}}, x.clock.Now())
		return err
	})
	return e
}

func (x *world) get(id string) *ent.Escalation {
	var e *ent.Escalation
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		e, err = c.Escalation.Get(ctx, id)
		return err
	})
	return e
}

// fire runs every recorded level wake-up, as the worker would.
func (x *world) fire() {
	x.t.Helper()
	for _, t := range x.q.take(tasks.KindEscalation) {
		level, loop := esc.TaskLevel(t.Kind + ":" + t.ID + ":" + t.Variant)
		if err := x.svc.FireDue(context.Background(), t.TenantID, t.ID, level, loop); err != nil {
			x.t.Fatal(err)
		}
	}
}

// send runs every recorded PagerDuty wake-up.
func (x *world) send() {
	x.t.Helper()
	for _, t := range x.q.take(tasks.KindPagerDuty) {
		if err := x.svc.Send(context.Background(), t.TenantID, t.ID); err != nil {
			x.t.Fatal(err)
		}
	}
}

func str(s string) *string { return &s }

func level(delay string, cond spec.Condition, targets ...spec.Target) spec.Level {
	return spec.Level{Delay: delay, Condition: cond, Targets: targets}
}

// Two levels (1s, 3s): nothing fires early; level 1 delivers to its
// endpoint and names the role's members; level 2 triggers PagerDuty with
// the subject's dedup_key; then the escalation is exhausted, and resolving
// it sends resolve with the same key.
func TestLevelsFireInOrder(t *testing.T) {
	x := newWorld(t)
	ep := x.endpoint()
	cred := x.pagerDutyCredential()
	x.in(func(ctx context.Context, c *ent.Client) error {
		return c.Member.Create().SetSubject("user_oncall").SetRoles([]string{"viewer", "operator"}).Exec(ctx)
	})
	p := x.policy("two-levels", 0,
		level("1s", spec.IfNotAcknowledged, spec.Target{WebhookEndpointID: &ep}, spec.Target{Role: str("operator")}),
		level("3s", spec.IfNotAcknowledged, spec.Target{PagerDuty: &spec.PagerDutyTarget{CredentialID: cred}}))
	e := x.start(p.ID, "inc_1")
	if e.NextFireAt == nil || !e.NextFireAt.Equal(x.clock.Now().Add(time.Second)) {
		t.Fatalf("first level due at %v", e.NextFireAt)
	}
	x.fire() // not due yet: nothing fires, the wake-up is sent again
	if got := x.get(e.ID); len(got.Firings) != 0 || got.Level != 0 {
		t.Fatalf("fired early: %+v", got.Firings)
	}
	x.clock.Advance(time.Second)
	x.fire()
	got := x.get(e.ID)
	if len(got.Firings) != 1 || got.Firings[0].Outcome != esc.OutcomeFired || got.Firings[0].Level != 1 || got.Level != 1 {
		t.Fatalf("after level 1: level %d, firings %+v", got.Level, got.Firings)
	}
	if !slices.Equal(got.Firings[0].Members, []string{"user_oncall"}) {
		t.Errorf("members of role operator: %v", got.Firings[0].Members)
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		ds, err := c.WebhookDelivery.Query().Where(webhookdelivery.EndpointID(ep)).All(ctx)
		if err != nil {
			return err
		}
		if len(ds) != 1 || ds[0].EventType != "incident.escalated" {
			t.Errorf("deliveries to the level's endpoint: %d", len(ds))
		}
		return nil
	})
	x.clock.Advance(2 * time.Second)
	x.fire()
	if got := x.get(e.ID); len(got.Firings) != 1 {
		t.Fatalf("level 2 fired before its 3s: %+v", got.Firings)
	}
	x.clock.Advance(time.Second)
	x.fire()
	got = x.get(e.ID)
	if len(got.Firings) != 2 || got.Status != escalation.StatusExhausted || got.NextFireAt != nil {
		t.Fatalf("after level 2: status %s, next %v, firings %d", got.Status, got.NextFireAt, len(got.Firings))
	}
	x.send()
	evs := x.pd.got()
	if len(evs) != 1 || evs[0]["event_action"] != "trigger" || evs[0]["dedup_key"] != "sla:inc_1" || evs[0]["routing_key"] != "R0UT1NGKEY" {
		t.Fatalf("pagerduty events: %v", evs)
	}
	payload, _ := evs[0]["payload"].(map[string]any)
	if payload["severity"] != "critical" || payload["source"] != "sluice" || payload["summary"] != "maxDuration breached" || payload["component"] != "wf_1" {
		t.Errorf("payload: %v", payload)
	}
	// Acknowledged after it ran out of levels: PagerDuty's incident is
	// still open, and is acknowledged too.
	x.in(func(ctx context.Context, c *ent.Client) error {
		return x.svc.Acknowledge(ctx, c, x.tenantID, esc.KindIncident, "inc_1", "user_oncall", x.clock.Now())
	})
	x.send()
	x.in(func(ctx context.Context, c *ent.Client) error {
		return x.svc.Resolve(ctx, c, x.tenantID, esc.KindIncident, "inc_1", "user_owner", x.clock.Now())
	})
	x.send()
	evs = x.pd.got()
	if len(evs) != 3 || evs[1]["event_action"] != "acknowledge" || evs[2]["event_action"] != "resolve" || evs[2]["dedup_key"] != "sla:inc_1" {
		t.Fatalf("acknowledge and resolve not mirrored: %v", evs)
	}
	if got := x.get(e.ID); got.Status != escalation.StatusResolved || got.ResolvedBy == nil || *got.ResolvedBy != "user_owner" {
		t.Errorf("resolved: %s %v", got.Status, got.ResolvedBy)
	}
}

// Acknowledging stops IF_NOT_ACKNOWLEDGED levels; an IF_NOT_RESOLVED level
// still fires; acknowledge is mirrored to PagerDuty after the trigger.
func TestAcknowledgeStopsUnacknowledgedLevels(t *testing.T) {
	x := newWorld(t)
	ep := x.endpoint()
	cred := x.pagerDutyCredential()
	p := x.policy("ack", 0,
		level("0s", spec.IfNotAcknowledged, spec.Target{PagerDuty: &spec.PagerDutyTarget{CredentialID: cred, Severity: str("error")}}),
		level("1m", spec.IfNotAcknowledged, spec.Target{WebhookEndpointID: &ep}),
		level("1m", spec.IfNotResolved, spec.Target{WebhookEndpointID: &ep}))
	e := x.start(p.ID, "inc_2")
	x.fire()
	x.in(func(ctx context.Context, c *ent.Client) error {
		return x.svc.Acknowledge(ctx, c, x.tenantID, esc.KindIncident, "inc_2", "user_oncall", x.clock.Now())
	})
	// The acknowledge was recorded after the trigger: it waits for it.
	x.send()
	x.clock.Advance(time.Second)
	x.send()
	evs := x.pd.got()
	if len(evs) != 2 || evs[0]["event_action"] != "trigger" || evs[1]["event_action"] != "acknowledge" {
		t.Fatalf("pagerduty order: %v", evs)
	}
	if pl := evs[0]["payload"].(map[string]any); pl["severity"] != "error" {
		t.Errorf("severity override: %v", pl["severity"])
	}
	x.clock.Advance(time.Minute)
	x.fire()
	x.clock.Advance(time.Minute)
	x.fire()
	got := x.get(e.ID)
	var outcomes []string
	for _, f := range got.Firings {
		outcomes = append(outcomes, f.Outcome)
	}
	if !slices.Equal(outcomes, []string{"fired", "skipped", "fired"}) || got.Status != escalation.StatusAcknowledged {
		t.Fatalf("outcomes %v, status %s", outcomes, got.Status)
	}
}

// repeat loops the levels: 1 level, repeat 2 fires three times, then the
// escalation is exhausted.
func TestRepeatLoops(t *testing.T) {
	x := newWorld(t)
	ep := x.endpoint()
	p := x.policy("loop", 2, level("10s", "", spec.Target{WebhookEndpointID: &ep}))
	e := x.start(p.ID, "inc_3")
	for range 4 {
		x.clock.Advance(10 * time.Second)
		x.fire()
	}
	got := x.get(e.ID)
	if len(got.Firings) != 3 || got.Status != escalation.StatusExhausted || got.Firings[2].Loop != 2 {
		t.Fatalf("firings %d, status %s", len(got.Firings), got.Status)
	}
}

// Editing or deleting the policy while an escalation runs leaves the
// escalation's levels as they were when it started.
func TestPolicySnapshot(t *testing.T) {
	x := newWorld(t)
	ep := x.endpoint()
	p := x.policy("snap", 0, level("1s", "", spec.Target{WebhookEndpointID: &ep}), level("3s", "", spec.Target{Role: str("operator")}))
	e := x.start(p.ID, "inc_4")
	x.in(func(ctx context.Context, c *ent.Client) error {
		_, err := x.svc.UpdatePolicy(ctx, p.ID, esc.PolicyInput{Levels: []spec.Level{level("1h", "", spec.Target{Role: str("viewer")})}, Repeat: new(int)})
		return err
	})
	x.clock.Advance(time.Second)
	x.fire()
	x.in(func(ctx context.Context, c *ent.Client) error {
		_, err := x.svc.DeletePolicy(ctx, p.ID)
		return err
	})
	x.clock.Advance(3 * time.Second)
	x.fire()
	got := x.get(e.ID)
	if len(got.Levels) != 2 || got.Levels[0].Delay != "1s" || len(got.Firings) != 2 || *got.Firings[1].Targets[0].Role != "operator" {
		t.Fatalf("levels %+v, firings %+v", got.Levels, got.Firings)
	}
}

// A level's wake-up lost (worker SIGKILL, Redis wiped) is found by
// DueTasks once past the grace, and duplicate wake-ups (the reconciler's
// and a late original, run at once) fire the level exactly once.
func TestLostWakeUpFiresOnce(t *testing.T) {
	x := newWorld(t)
	ep := x.endpoint()
	p := x.policy("lost", 0, level("1s", "", spec.Target{WebhookEndpointID: &ep}), level("1h", "", spec.Target{WebhookEndpointID: &ep}))
	e := x.start(p.ID, "inc_5")
	x.q.take(tasks.KindEscalation) // lost
	x.clock.Advance(time.Second)
	due, err := x.svc.DueTasks(context.Background(), x.tenantID, 2*time.Second)
	if err != nil || len(due) != 0 {
		t.Fatalf("due within the grace: %v %v", due, err)
	}
	x.clock.Advance(5 * time.Second)
	due, err = x.svc.DueTasks(context.Background(), x.tenantID, 2*time.Second)
	if err != nil || len(due) != 1 || due[0].ID != e.ID || due[0].Kind != tasks.KindEscalation {
		t.Fatalf("due: %v %v", due, err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- x.svc.FireDue(context.Background(), x.tenantID, e.ID, -1, -1)
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := x.get(e.ID)
	if len(got.Firings) != 1 || got.Level != 1 {
		t.Fatalf("fired %d times", len(got.Firings))
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		n, err := c.WebhookDelivery.Query().Where(webhookdelivery.EndpointID(ep)).Count(ctx)
		if n != 1 {
			t.Errorf("deliveries: %d", n)
		}
		return err
	})
	if due, _ := x.svc.DueTasks(context.Background(), x.tenantID, 2*time.Second); len(due) != 0 {
		t.Errorf("still due after firing: %v", due)
	}
}

// A PagerDuty send is retried on 503 after the Retry-After, each try
// recorded; a 400 fails it at once.
func TestPagerDutyRetries(t *testing.T) {
	x := newWorld(t)
	cred := x.pagerDutyCredential()
	p := x.policy("pd", 0, level("0s", "", spec.Target{PagerDuty: &spec.PagerDutyTarget{CredentialID: cred}}))
	x.pd.codes = []int{http.StatusServiceUnavailable}
	e := x.start(p.ID, "inc_6")
	x.fire()
	x.send()
	var s *ent.PagerDutySend
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		s, err = c.PagerDutySend.Query().Where(pagerdutysend.EscalationID(e.ID)).Only(ctx)
		return err
	})
	if s.Status != pagerdutysend.StatusPending || s.Attempts != 1 || s.NextAttemptAt == nil || s.NextAttemptAt.Sub(x.clock.Now()) < 7*time.Second {
		t.Fatalf("after a 503: %s, %d tries, next %v", s.Status, s.Attempts, s.NextAttemptAt)
	}
	x.send() // not due yet
	x.clock.Advance(7 * time.Second)
	x.send()
	x.in(func(ctx context.Context, c *ent.Client) error {
		var err error
		s, err = c.PagerDutySend.Get(ctx, s.ID)
		return err
	})
	if s.Status != pagerdutysend.StatusSent || s.Attempts != 2 || len(s.AttemptList) != 2 || *s.AttemptList[0].StatusCode != 503 || *s.AttemptList[1].StatusCode != 202 {
		t.Fatalf("after the retry: %s, %d tries, %+v", s.Status, s.Attempts, s.AttemptList)
	}

	x.pd.codes = []int{http.StatusBadRequest}
	x.start(p.ID, "inc_7")
	x.fire()
	x.send()
	x.in(func(ctx context.Context, c *ent.Client) error {
		list, err := c.PagerDutySend.Query().Where(pagerdutysend.StatusEQ(pagerdutysend.StatusFailed)).All(ctx)
		if len(list) != 1 || list[0].Attempts != 1 {
			t.Errorf("a 400 fails at once: %d", len(list))
		}
		return err
	})
}

// Bad policies are refused with VALIDATION and a path for each problem,
// and nothing is written; another tenant's endpoint reads as unknown.
func TestPolicyValidation(t *testing.T) {
	x := newWorld(t)
	other := newWorld(t)
	foreign := other.endpoint()
	ep := x.endpoint()
	var bearer string
	x.in(func(ctx context.Context, c *ent.Client) error {
		cr, err := x.ctl.CreateCredential(ctx, x.envID, "tok", credential.TypeBearer, map[string]any{"token": "t"})
		if err == nil {
			bearer = cr.ID
		}
		return err
	})
	name := "bad"
	cases := []struct {
		in   esc.PolicyInput
		path string
	}{
		{esc.PolicyInput{Name: &name}, "input.levels"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("-1s", "", spec.Target{WebhookEndpointID: &ep})}}, "input.levels[0].delay"},
		{esc.PolicyInput{Name: &name, Levels: slices.Repeat([]spec.Level{level("1s", "", spec.Target{WebhookEndpointID: &ep})}, 11)}, "input.levels"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{WebhookEndpointID: &foreign})}}, "input.levels[0].targets[0].webhookEndpointID"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{PagerDuty: &spec.PagerDutyTarget{CredentialID: bearer}})}}, "input.levels[0].targets[0].pagerDuty.credentialID"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{PagerDuty: &spec.PagerDutyTarget{CredentialID: "cred_nope"}})}}, "input.levels[0].targets[0].pagerDuty.credentialID"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{Role: str("boss")})}}, "input.levels[0].targets[0].role"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{})}}, "input.levels[0].targets[0]"},
		{esc.PolicyInput{Name: &name, Levels: []spec.Level{level("1s", "", spec.Target{Role: str("admin")})}, Repeat: func() *int { n := 11; return &n }()}, "input.repeat"},
	}
	for _, tc := range cases {
		err := x.try(func(ctx context.Context, c *ent.Client) error {
			_, err := x.svc.CreatePolicy(ctx, tc.in)
			return err
		})
		e, ok := errs.As(err)
		if !ok || e.Code != errs.Validation {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		var paths []string
		for _, p := range e.Problems {
			paths = append(paths, p.Path)
		}
		if !slices.Contains(paths, tc.path) {
			t.Errorf("want a problem at %s, got %v", tc.path, paths)
		}
	}
	x.in(func(ctx context.Context, c *ent.Client) error {
		n, err := c.EscalationPolicy.Query().Count(ctx)
		if n != 0 {
			t.Errorf("policies written: %d", n)
		}
		return err
	})
}
