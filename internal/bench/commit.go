package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// commitBaseline measures what one commit costs on the benchmark's own
// database: a single client inserting one row per transaction (an INSERT in
// autocommit: one round trip, one WAL flush with synchronous_commit on),
// n times after a short warm-up, into a table of its own. It is the unit
// the chain's hand-off is compared with: a step's result and the next
// step's claim can cost no less than a commit each.
func commitBaseline(ctx context.Context, url string, n int) (Sample, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("commit baseline: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, at timestamptz NOT NULL, note text NOT NULL)`); err != nil {
		return nil, fmt.Errorf("commit baseline table: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `DROP TABLE IF EXISTS bench_commit`) //nolint:errcheck // best effort
	insert := func() (time.Duration, error) {
		begin := time.Now()
		_, err := conn.Exec(ctx, `INSERT INTO bench_commit (at, note) VALUES ($1, $2)`, begin, "one row")
		return time.Since(begin), err
	}
	for range min(n, 20) {
		if _, err := insert(); err != nil {
			return nil, fmt.Errorf("commit baseline: %w", err)
		}
	}
	out := make(Sample, 0, n)
	for range n {
		d, err := insert()
		if err != nil {
			return nil, fmt.Errorf("commit baseline: %w", err)
		}
		out = append(out, d)
	}
	return out, nil
}

// commits measures the commit baseline once per benchmark and reports it.
func (s *session) commits(ctx context.Context) (time.Duration, error) {
	if s.commitP50 > 0 {
		return s.commitP50, nil
	}
	if s.t.DatabaseURL == "" {
		return 0, nil
	}
	sample, err := commitBaseline(ctx, s.t.DatabaseURL, s.o.Sizes.Commits)
	if err != nil {
		return 0, err
	}
	s.commitP50 = sample.Median()
	var total time.Duration
	for _, d := range sample {
		total += d
	}
	s.figure(ScenarioBaseline, "Postgres one-row insert commit, 1 client p50", ms(s.commitP50), "ms", nil)
	s.figure(ScenarioBaseline, "Postgres one-row insert commit, 1 client", float64(len(sample))/total.Seconds(), "commits/s", nil)
	return s.commitP50, nil
}
