package tally_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/internal/tally"
)

func adminURL() string {
	if u := os.Getenv("SLUICE_TEST_ADMIN_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

func TestPostgresCallsCountTowardsTheirTally(t *testing.T) {
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(adminURL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Tracer = tally.PGTracer{}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)

	var tl tally.Tally
	tctx := tally.With(ctx, &tl)
	// Outside a transaction: each statement is one of its own.
	if _, err := conn.Exec(tctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// A transaction: BEGIN, a batch of three, COMMIT.
	tx, err := conn.Begin(tctx)
	if err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT 1")
	b.Queue("SELECT 2")
	b.Queue("SELECT 3")
	if err := tx.SendBatch(tctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(tctx); err != nil {
		t.Fatal(err)
	}
	if got := tl.Transactions.Load(); got != 2 {
		t.Errorf("transactions = %d, want 2 (one statement alone, one BEGIN)", got)
	}
	if got := tl.Statements.Load(); got != 6 {
		t.Errorf("statements = %d, want 6 (SELECT, BEGIN, 3 batched, COMMIT)", got)
	}
	// SELECT 1 was prepared by its first execution (the Exec without args
	// runs as a simple query, so no prepare): SELECT, BEGIN, batch, COMMIT,
	// plus one prepare round trip per new statement of the batch at most.
	if got := tl.RoundTrips.Load(); got < 4 || got > 5 {
		t.Errorf("round trips = %d, want 4 (or 5 with the batch's statements prepared first)", got)
	}

	// Work without a tally counts under "other".
	before := tally.Snapshot()[tally.Other]
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	if got := tally.Snapshot()[tally.Other].RoundTrips - before.RoundTrips; got < 1 {
		t.Errorf("other round trips grew by %d, want at least 1", got)
	}
}

func TestRedisCallsCountTowardsTheirTally(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", PoolSize: 1})
	defer rdb.Close()
	rdb.AddHook(tally.RedisHook{})
	// A new connection's handshake (HELLO, CLIENT SETINFO) counts too: open
	// it first.
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return p.Ping(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	var tl tally.Tally
	tctx := tally.With(ctx, &tl)
	if err := rdb.Ping(tctx).Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rdb.Pipeline()
	pipe.Ping(tctx)
	pipe.Ping(tctx)
	if _, err := pipe.Exec(tctx); err != nil {
		t.Fatal(err)
	}
	if got := tl.RedisRoundTrips.Load(); got != 2 {
		t.Errorf("redis round trips = %d, want 2 (one command, one pipeline)", got)
	}
	if got := tl.RedisCommands.Load(); got != 3 {
		t.Errorf("redis commands = %d, want 3", got)
	}
}

var pathSeq int

func TestRecordFilesUnitsByPathAndExposesThem(t *testing.T) {
	pathSeq++ // paths are process-wide: one of this run's own
	path := fmt.Sprintf("test:%s:%d", t.Name(), pathSeq)
	ctx := context.Background()
	for i := range 3 {
		var tl tally.Tally
		tl.RoundTrips.Add(int64(2 + i))
		tctx := tally.With(ctx, &tl)
		if i == 2 {
			tally.Rename(tctx, path+":renamed")
		}
		tally.Record(path, &tl)
	}
	snap := tally.Snapshot()
	if c := snap[path]; c.Units != 2 || c.RoundTrips != 5 {
		t.Errorf("%s = %+v, want 2 units and 5 round trips", path, c)
	}
	if c := snap[path+":renamed"]; c.Units != 1 || c.RoundTrips != 4 {
		t.Errorf("renamed = %+v, want 1 unit and 4 round trips", c)
	}
	reg := prometheus.NewRegistry()
	if err := tally.Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "sluice_postgres_round_trips_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "path" && l.GetValue() == path {
					found = true
					if v := m.GetCounter().GetValue(); v != 5 {
						t.Errorf("exposed %s round trips = %v, want 5", path, v)
					}
				}
			}
		}
	}
	if !found {
		t.Errorf("sluice_postgres_round_trips_total{path=%q} not exposed", path)
	}
}
