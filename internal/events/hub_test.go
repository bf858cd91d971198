package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// These tests use the real Redis the suite uses (SLUICE_TEST_REDIS_ADDR,
// default 127.0.0.1:6379). Pub/sub channels are shared by every database
// and every test run on it, so each test names tenants of its own (tenant):
// other runs' notices are for tenants no subscriber here listens to.

func redisAddr() string {
	if a := os.Getenv("SLUICE_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

func newRedis(t *testing.T, o redis.Options) *redis.Client {
	t.Helper()
	o.Addr = redisAddr()
	rdb := redis.NewClient(&o)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis at %s: %v", o.Addr, err)
	}
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// tenant returns a tenant id no other test or run uses.
func tenant(name string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ten_hubtest_" + name + "_" + hex.EncodeToString(b)
}

// startHub runs a Hub on the test Redis and returns it with a publisher and
// the registry holding its gauge.
func startHub(t *testing.T, buffer int) (*Hub, *RedisPublisher, *prometheus.Registry) {
	t.Helper()
	rdb := newRedis(t, redis.Options{})
	reg := prometheus.NewRegistry()
	h, err := NewHub(rdb, HubOptions{Buffer: buffer, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	p := NewRedisPublisher(rdb, nil)
	t.Cleanup(p.Close) // before rdb's Close: cleanups run last to first
	return h, p, reg
}

func activeSubscriptions(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "sluice_active_subscriptions" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("sluice_active_subscriptions is not registered")
	return 0
}

func receive(t *testing.T, s *Subscription) *Notice {
	t.Helper()
	select {
	case n, ok := <-s.C():
		if !ok {
			t.Fatalf("subscription closed: %v", s.Err())
		}
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no notice")
		return nil
	}
}

func notice(tenantID, runID string, seq int64) Notice {
	return Notice{TenantID: tenantID, RunID: runID, Status: "running", CostMicroUSD: 7,
		Events: []Event{{ID: "evt_x", Seq: seq, Type: "step.started", At: time.Unix(1700000000, 0).UTC()}}}
}

func TestHubFansOutByTenantAndRun(t *testing.T) {
	a := tenant("a")
	b := tenant("b")
	h, pub, reg := startHub(t, 8)
	runSub := h.SubscribeRun(a, "run_1")
	tenantSub := h.SubscribeTenant(a)
	otherRun := h.SubscribeRun(a, "run_2")
	otherTenant := h.SubscribeTenant(b)
	if got := activeSubscriptions(t, reg); got != 4 {
		t.Fatalf("active subscriptions %v, want 4", got)
	}

	pub.Publish(context.Background(), notice(a, "run_1", 3))
	// A notice for each of the other subscribers, published after: if the
	// first had reached them, it would arrive before these.
	pub.Publish(context.Background(), notice(a, "run_2", 1))
	pub.Publish(context.Background(), notice(b, "run_9", 1))

	for _, s := range []*Subscription{runSub, tenantSub} {
		n := receive(t, s)
		if n.TenantID != a || n.RunID != "run_1" || n.Status != "running" || n.CostMicroUSD != 7 ||
			len(n.Events) != 1 || n.Events[0].Seq != 3 || !n.Events[0].At.Equal(time.Unix(1700000000, 0)) {
			t.Fatalf("notice: %+v", n)
		}
	}
	if n := receive(t, otherRun); n.RunID != "run_2" {
		t.Fatalf("run_2's subscriber got %s's notice", n.RunID)
	}
	if n := receive(t, otherTenant); n.TenantID != b {
		t.Fatalf("b's subscriber got %s's notice", n.TenantID)
	}
	runSub.Close()
	runSub.Close()
	if got := activeSubscriptions(t, reg); got != 3 {
		t.Fatalf("active subscriptions %v after a close, want 3", got)
	}
}

func TestHubDropsSlowSubscriberOnly(t *testing.T) {
	a := tenant("a")
	h, pub, reg := startHub(t, 2)
	slow := h.SubscribeRun(a, "run_1")
	fast := h.SubscribeRun(a, "run_1")
	for seq := int64(1); seq <= 3; seq++ {
		pub.Publish(context.Background(), notice(a, "run_1", seq))
		if n := receive(t, fast); n.Events[0].Seq != seq {
			t.Fatalf("fast subscriber got seq %d, want %d", n.Events[0].Seq, seq)
		}
	}
	// slow never read: two notices fit, the third closed it.
	for range 2 {
		receive(t, slow)
	}
	if _, ok := <-slow.C(); ok {
		t.Fatal("a full subscriber was not dropped")
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Fatalf("drop reason %v", slow.Err())
	}
	if got := activeSubscriptions(t, reg); got != 1 {
		t.Fatalf("active subscriptions %v, want 1", got)
	}
}

func TestHubCloseEndsSubscriptions(t *testing.T) {
	a := tenant("a")
	h, _, reg := startHub(t, 4)
	s := h.SubscribeTenant(a)
	h.Close()
	if _, ok := <-s.C(); ok || !errors.Is(s.Err(), ErrHubClosed) {
		t.Fatalf("after Close: open=%v err=%v", ok, s.Err())
	}
	if h.Closing().Err() == nil {
		t.Fatal("Closing not cancelled")
	}
	late := h.SubscribeRun(a, "run_1")
	if _, ok := <-late.C(); ok || !errors.Is(late.Err(), ErrHubClosed) {
		t.Fatal("a subscription after Close is open")
	}
	if got := activeSubscriptions(t, reg); got != 0 {
		t.Fatalf("active subscriptions %v, want 0", got)
	}
}

func TestHubResyncsAfterReconnect(t *testing.T) {
	a := tenant("a")
	name := "sluice-hub-test-" + a
	rdb := newRedis(t, redis.Options{ClientName: name, MaxRetries: -1})
	h, err := NewHub(rdb, HubOptions{IdleCheck: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	s := h.SubscribeRun(a, "run_1")
	// Drop the hub's connection, as a Redis restart or a network cut
	// would: the hub must notice, re-subscribe and tell subscribers to
	// re-read what they may have missed.
	killPubSub(t, rdb, name)
	select {
	case n := <-s.C():
		if !n.Resync || n.TenantID != a || n.RunID != "run_1" {
			t.Fatalf("want a resync of %s/run_1, got %+v", a, n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no resync after the connection was dropped")
	}
	// And the subscription works again.
	p := NewRedisPublisher(rdb, nil)
	defer p.Close()
	p.Publish(context.Background(), notice(a, "run_1", 1))
	if n := receive(t, s); n.Resync || n.Events[0].Seq != 1 {
		t.Fatalf("after the resync: %+v", n)
	}
}

// killPubSub closes, from the server side, the pub/sub connection of the
// client named name.
func killPubSub(t *testing.T, rdb *redis.Client, name string) {
	t.Helper()
	ctx := context.Background()
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, line := range strings.Split(list, "\n") {
		if !strings.Contains(line, " name="+name+" ") || !strings.Contains(line, "psub=1") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if id, ok := strings.CutPrefix(f, "id="); ok {
				if err := rdb.Do(ctx, "CLIENT", "KILL", "ID", id).Err(); err != nil {
					t.Fatal(err)
				}
				killed++
			}
		}
	}
	if killed == 0 {
		t.Fatalf("no pub/sub connection named %s in CLIENT LIST", name)
	}
}

// A Hub decodes a tenant's notices only while someone in this process
// listens to that tenant, through a run or the whole tenant.
func TestHubListensOnlyForSubscribedTenants(t *testing.T) {
	a, b := tenant("a"), tenant("b")
	h, _, _ := startHub(t, 4)
	if h.listened(a) {
		t.Fatal("listened to a tenant with no subscriber")
	}
	run := h.SubscribeRun(a, "run_1")
	all := h.SubscribeTenant(a)
	if !h.listened(a) || h.listened(b) {
		t.Fatalf("after subscribing to a: a %v, b %v", h.listened(a), h.listened(b))
	}
	run.Close()
	if !h.listened(a) {
		t.Fatal("stopped listening while a tenant subscription remains")
	}
	all.Close()
	all.Close() // twice is harmless and must not count twice
	if h.listened(a) {
		t.Fatal("still listening after every subscriber left")
	}
}

// TestHubKeyRevoked: a revocation published by any process reaches the
// Hub's KeyRevoked callback, and run notices still flow.
func TestHubKeyRevoked(t *testing.T) {
	rdb := newRedis(t, redis.Options{})
	got := make(chan KeyRevoked, 8)
	h, err := NewHub(rdb, HubOptions{KeyRevoked: func(tenantID, keyID string) {
		got <- KeyRevoked{TenantID: tenantID, KeyID: keyID}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	tid := tenant("revoke")
	sub := h.SubscribeTenant(tid)
	defer sub.Close()
	p := NewRedisPublisher(newRedis(t, redis.Options{}), nil)
	t.Cleanup(p.Close)
	keyID := "key_" + tid
	p.PublishKeyRevoked(context.Background(), tid, keyID)
	p.Publish(context.Background(), Notice{TenantID: tid, RunID: "run_x", Status: "running"})
	deadline := time.After(10 * time.Second)
	for {
		select {
		case k := <-got:
			if k.KeyID != keyID {
				continue // another test run's revocation on the shared channel
			}
			if k.TenantID != tid {
				t.Fatalf("revocation for %s, want %s", k.TenantID, tid)
			}
			select {
			case n := <-sub.C():
				if n.RunID != "run_x" {
					t.Fatalf("notice %+v", n)
				}
				return
			case <-deadline:
				t.Fatal("run notice not delivered next to revocations")
			}
		case <-deadline:
			t.Fatal("revocation not delivered")
		}
	}
}

// TestPublisherKeepsOrderAndSendsQueuedOnClose: Publish returns before the
// notice is on Redis; the notices of one publisher still arrive in the
// order they were handed over, Close sends what is still queued, and a
// Publish after Close is sent inline.
func TestPublisherKeepsOrderAndSendsQueuedOnClose(t *testing.T) {
	a := tenant("order")
	h, _, _ := startHub(t, 2048)
	sub := h.SubscribeRun(a, "run_1")
	defer sub.Close()
	p := NewRedisPublisher(newRedis(t, redis.Options{}), nil)
	const n = 1000
	for i := int64(1); i <= n; i++ {
		p.Publish(context.Background(), notice(a, "run_1", i))
	}
	p.Close()
	p.Close() // a second Close is harmless
	p.Publish(context.Background(), notice(a, "run_1", n+1))
	for want := int64(1); want <= n+1; want++ {
		got := receive(t, sub)
		if got.Resync {
			t.Fatalf("resync after %d notices: the hub dropped some", want-1)
		}
		if len(got.Events) != 1 || got.Events[0].Seq != want {
			t.Fatalf("notice %d carries %+v", want, got.Events)
		}
	}
}
