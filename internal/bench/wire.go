package bench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/internal/tally"
)

// Wire cost: the processes count every Postgres and Redis call by the unit
// of work it belongs to (internal/tally): the API's startRun calls, steps
// a worker took from the queue ("step"), steps it ran back to back
// ("continuation"), the step whose transaction finished its run
// ("finish"), and everything else ("other": queue polling, heartbeats, the
// reconciler, live updates). A scenario reads the counters before and
// after and reports the difference per unit.

// wirePaths are the paths reported, in order.
var wirePaths = []string{"api:startRun", "step", "continuation", "finish"}

// ScrapeCounters sums the wire counters of processes serving /metrics at
// urls (http://host:port).
func ScrapeCounters(ctx context.Context, urls []string) (map[string]tally.Counts, error) {
	out := map[string]tally.Counts{}
	for _, u := range urls {
		if err := scrape(ctx, u+"/metrics", out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

var metricLine = regexp.MustCompile(`^(sluice_[a-z_]+_total)\{path="([^"]*)"\} ([0-9.e+]+)$`)

// groupLine is a worker's group commit counter (store.Group).
var groupLine = regexp.MustCompile(`^(sluice_step_grouped_total|sluice_step_group_transactions_total|sluice_step_group_retried_total) ([0-9.e+]+)$`)

// groupPath holds the group commit counters in a scrape: Units is steps
// committed in shared transactions, Transactions the shared transactions,
// Statements the steps run again alone. It is not a path of work, and
// reportWire leaves it out.
const groupPath = "~group commit"

func scrape(ctx context.Context, url string, into map[string]tally.Counts) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if g := groupLine.FindStringSubmatch(sc.Text()); g != nil {
			v, err := strconv.ParseFloat(g[2], 64)
			if err != nil {
				continue
			}
			c := into[groupPath]
			switch g[1] {
			case "sluice_step_grouped_total":
				c.Units += int64(v)
			case "sluice_step_group_transactions_total":
				c.Transactions += int64(v)
			default:
				c.Statements += int64(v)
			}
			into[groupPath] = c
			continue
		}
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			continue
		}
		c := into[m[2]]
		n := int64(v)
		switch m[1] {
		case "sluice_work_units_total":
			c.Units += n
		case "sluice_postgres_transactions_total":
			c.Transactions += n
		case "sluice_postgres_statements_total":
			c.Statements += n
		case "sluice_postgres_round_trips_total":
			c.RoundTrips += n
		case "sluice_redis_round_trips_total":
			c.RedisRoundTrips += n
		case "sluice_redis_commands_total":
			c.RedisCommands += n
		default:
			continue
		}
		into[m[2]] = c
	}
	return sc.Err()
}

// wireMark is the counters at a point in a scenario.
type wireMark map[string]tally.Counts

// markWire reads the counters, or returns nil when the target has none.
func (s *session) markWire(ctx context.Context) (wireMark, error) {
	if s.t.Counters == nil {
		return nil, nil
	}
	m, err := s.t.Counters(ctx)
	return wireMark(m), err
}

// reportWire reports the wire cost between before and now: per unit of
// each path, and per step over every path ("other" included).
func (s *session) reportWire(ctx context.Context, scenario, label string, before wireMark, steps int) error {
	if before == nil || steps <= 0 {
		return nil
	}
	after, err := s.markWire(ctx)
	if err != nil {
		return err
	}
	var all tally.Counts
	for name, c := range after {
		if name != groupPath {
			all = all.Plus(c.Minus(before[name]))
		}
	}
	for _, p := range wirePaths {
		d := after[p].Minus(before[p])
		if d.Units <= 0 {
			continue
		}
		s.wireFigure(scenario, fmt.Sprintf("%s: wire per %s (%d)", label, p, d.Units), d, float64(d.Units))
	}
	other := after[tally.Other].Minus(before[tally.Other])
	s.wireFigure(scenario, label+": wire of other work, per step", other, float64(steps))
	s.wireFigure(scenario, label+": wire per step, all paths", all, float64(steps))
	return nil
}

// wireFigure reports c divided by n: the value is Postgres round trips,
// the text says the rest.
func (s *session) wireFigure(scenario, name string, c tally.Counts, n float64) {
	per := func(v int64) string { return trim(float64(v) / n) }
	text := strings.Join([]string{
		per(c.Transactions) + " tx", per(c.Statements) + " stmt", per(c.RoundTrips) + " PG RT",
		per(c.RedisRoundTrips) + " Redis RT", per(c.RedisCommands) + " Redis cmd",
	}, ", ")
	f := Figure{Scenario: scenario, Name: name, Value: float64(c.RoundTrips) / n, Unit: "PG RT", Text: text}
	s.report.Figures = append(s.report.Figures, f)
	s.progress("  %s %s: %s", scenario, name, text)
}

// reportGroups reports how many of a phase's steps were committed in
// shared transactions (group commit), and in how many.
func (s *session) reportGroups(ctx context.Context, scenario, label string, before wireMark, steps int) error {
	if before == nil || steps <= 0 {
		return nil
	}
	after, err := s.markWire(ctx)
	if err != nil {
		return err
	}
	d := after[groupPath].Minus(before[groupPath])
	text := fmt.Sprintf("%d of %d steps in %d shared transactions (%s steps each), %d run again alone",
		d.Units, steps, d.Transactions, trim(float64(d.Units)/float64(max(d.Transactions, 1))), d.Statements)
	s.report.Figures = append(s.report.Figures, Figure{Scenario: scenario, Name: label + ": group commit", Value: 100 * float64(d.Units) / float64(steps), Unit: "% grouped", Text: text})
	s.progress("  %s %s: group commit: %s", scenario, label, text)
	return nil
}
