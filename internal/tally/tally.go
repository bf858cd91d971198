// Package tally counts what a piece of work costs on the wire: Postgres
// transactions, statements and round trips, Redis round trips and
// commands. A unit of work (a startRun call, a step a worker ran) carries a
// *Tally in its context (With); the pgx tracer (PGTracer) and the Redis
// hook (RedisHook) add to the tally of the context each call runs with,
// and to the process-wide "other" path when it has none (queue polling,
// heartbeats, the reconciler). Record files a finished unit's tally under
// a path; Register exposes every path's totals as Prometheus counters
// (sluice_postgres_round_trips_total{path} and the rest), which
// `sluice bench` divides by the units it ran.
package tally

import (
	"context"
	"maps"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Tally is the wire cost of one unit of work so far. Its methods are safe
// for concurrent use (a fan-out dispatches from several goroutines).
type Tally struct {
	Transactions    atomic.Int64 // Postgres transactions begun, explicit or implicit (a statement outside one)
	Statements      atomic.Int64 // Postgres statements sent (a batch's each count; BEGIN and COMMIT too)
	RoundTrips      atomic.Int64 // Postgres round trips (a batch is one; a first-time prepare is one more)
	RedisRoundTrips atomic.Int64 // Redis round trips (a pipeline is one)
	RedisCommands   atomic.Int64 // Redis commands (a pipeline's each count)

	renamed atomic.Pointer[string] // Rename's path, if any
}

// Counts is a Tally's values, plus how many units were recorded.
type Counts struct {
	Units                                int64
	Transactions, Statements, RoundTrips int64
	RedisRoundTrips, RedisCommands       int64
}

// Plus is c and o added field by field.
func (c Counts) Plus(o Counts) Counts {
	return Counts{
		Units: c.Units + o.Units, Transactions: c.Transactions + o.Transactions, Statements: c.Statements + o.Statements,
		RoundTrips: c.RoundTrips + o.RoundTrips, RedisRoundTrips: c.RedisRoundTrips + o.RedisRoundTrips, RedisCommands: c.RedisCommands + o.RedisCommands,
	}
}

// Minus is c less o field by field (what happened between two snapshots).
func (c Counts) Minus(o Counts) Counts {
	return c.Plus(Counts{
		Units: -o.Units, Transactions: -o.Transactions, Statements: -o.Statements,
		RoundTrips: -o.RoundTrips, RedisRoundTrips: -o.RedisRoundTrips, RedisCommands: -o.RedisCommands,
	})
}

func (t *Tally) counts() Counts {
	return Counts{
		Transactions: t.Transactions.Load(), Statements: t.Statements.Load(), RoundTrips: t.RoundTrips.Load(),
		RedisRoundTrips: t.RedisRoundTrips.Load(), RedisCommands: t.RedisCommands.Load(),
	}
}

type tallyKey struct{}

// With returns ctx carrying t: calls made with it (or a context derived
// from it) count towards t.
func With(ctx context.Context, t *Tally) context.Context {
	return context.WithValue(ctx, tallyKey{}, t)
}

// of is the tally of ctx, or the process's "other" path.
func of(ctx context.Context) *Tally {
	if ctx != nil {
		if t, ok := ctx.Value(tallyKey{}).(*Tally); ok && t != nil {
			return t
		}
	}
	return other
}

// Other is the path of work that carries no tally.
const Other = "other"

var (
	mu    sync.Mutex
	paths = map[string]Counts{} // totals of the recorded units, by path
	other = &Tally{}
)

// Rename files the unit of ctx's tally under name instead of the name its
// Record gives (a step whose transaction finished its run: "finish").
// Without a tally in ctx it does nothing.
func Rename(ctx context.Context, name string) {
	if t, ok := ctx.Value(tallyKey{}).(*Tally); ok && t != nil {
		t.renamed.Store(&name)
	}
}

// Record adds a finished unit's tally under name (or the name Rename gave
// it). Names must come from a bounded set (they become a metric label).
func Record(name string, t *Tally) {
	if r := t.renamed.Load(); r != nil {
		name = *r
	}
	c := t.counts()
	c.Units = 1
	mu.Lock()
	defer mu.Unlock()
	paths[name] = paths[name].Plus(c)
}

// Snapshot returns the totals of every path so far, "other" included.
func Snapshot() map[string]Counts {
	mu.Lock()
	defer mu.Unlock()
	out := maps.Clone(paths)
	out[Other] = other.counts()
	return out
}

// PGTracer counts Postgres calls into the tally of their context. Set it
// as the Tracer of every pgx connection config (store.Open does).
type PGTracer struct{}

var (
	_ pgx.QueryTracer    = PGTracer{}
	_ pgx.BatchTracer    = PGTracer{}
	_ pgx.PrepareTracer  = PGTracer{}
	_ pgx.CopyFromTracer = PGTracer{}
)

// begins reports whether sql starts a transaction (BEGIN, START TRANSACTION).
func begins(sql string) bool {
	s := strings.TrimLeft(sql, " \t\r\n")
	if len(s) < 5 {
		return false
	}
	return strings.EqualFold(s[:5], "begin") || strings.EqualFold(s[:5], "start")
}

// idle reports whether conn is outside a transaction block, so that what it
// sends next runs as a transaction of its own.
func idle(conn *pgx.Conn) bool {
	return conn != nil && conn.PgConn().TxStatus() == 'I'
}

func (PGTracer) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	t := of(ctx)
	t.Statements.Add(1)
	t.RoundTrips.Add(1)
	if begins(data.SQL) || idle(conn) {
		t.Transactions.Add(1)
	}
	return ctx
}

func (PGTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (PGTracer) TraceBatchStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	t := of(ctx)
	t.RoundTrips.Add(1)
	if data.Batch != nil {
		t.Statements.Add(int64(data.Batch.Len()))
	}
	if idle(conn) {
		t.Transactions.Add(1)
	}
	return ctx
}

func (PGTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (PGTracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (PGTracer) TracePrepareStart(ctx context.Context, _ *pgx.Conn, _ pgx.TracePrepareStartData) context.Context {
	of(ctx).RoundTrips.Add(1)
	return ctx
}

func (PGTracer) TracePrepareEnd(context.Context, *pgx.Conn, pgx.TracePrepareEndData) {}

func (PGTracer) TraceCopyFromStart(ctx context.Context, conn *pgx.Conn, _ pgx.TraceCopyFromStartData) context.Context {
	t := of(ctx)
	t.Statements.Add(1)
	t.RoundTrips.Add(1)
	if idle(conn) {
		t.Transactions.Add(1)
	}
	return ctx
}

func (PGTracer) TraceCopyFromEnd(context.Context, *pgx.Conn, pgx.TraceCopyFromEndData) {}

// RedisHook counts Redis calls into the tally of their context. Add it to
// every Redis client (client.AddHook).
type RedisHook struct{}

var _ redis.Hook = RedisHook{}

func (RedisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (RedisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		t := of(ctx)
		t.RedisRoundTrips.Add(1)
		t.RedisCommands.Add(1)
		return next(ctx, cmd)
	}
}

func (RedisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		t := of(ctx)
		t.RedisRoundTrips.Add(1)
		t.RedisCommands.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// Register exposes every path's totals on reg.
func Register(reg prometheus.Registerer) error {
	return reg.Register(collector{})
}

var (
	descUnits        = prometheus.NewDesc("sluice_work_units_total", "Units of work whose wire cost was recorded, by path (api:<field>, step, continuation, finish); other has none.", []string{"path"}, nil)
	descTransactions = prometheus.NewDesc("sluice_postgres_transactions_total", "Postgres transactions begun (explicit, or a statement outside one), by path.", []string{"path"}, nil)
	descStatements   = prometheus.NewDesc("sluice_postgres_statements_total", "Postgres statements sent, by path.", []string{"path"}, nil)
	descRoundTrips   = prometheus.NewDesc("sluice_postgres_round_trips_total", "Postgres round trips (a batch is one), by path.", []string{"path"}, nil)
	descRedisTrips   = prometheus.NewDesc("sluice_redis_round_trips_total", "Redis round trips (a pipeline is one), by path.", []string{"path"}, nil)
	descRedisCmds    = prometheus.NewDesc("sluice_redis_commands_total", "Redis commands sent, by path.", []string{"path"}, nil)
)

type collector struct{}

func (collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUnits, descTransactions, descStatements, descRoundTrips, descRedisTrips, descRedisCmds} {
		ch <- d
	}
}

func (collector) Collect(ch chan<- prometheus.Metric) {
	for name, c := range Snapshot() {
		for _, m := range []struct {
			d *prometheus.Desc
			v int64
		}{{descUnits, c.Units}, {descTransactions, c.Transactions}, {descStatements, c.Statements},
			{descRoundTrips, c.RoundTrips}, {descRedisTrips, c.RedisRoundTrips}, {descRedisCmds, c.RedisCommands}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v), name)
		}
	}
}
