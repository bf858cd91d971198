package control

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicehq/sluice/ent"
)

// BacklogCollector exports every tenant's backlog as the sluice_backlog_*
// gauges, labelled by tenant, workflow and environment (ids the server
// chose; never a run). It reads Postgres when scraped, at most once per
// MinInterval (other scrapes get the last reading).
type BacklogCollector struct {
	client      *ent.Client
	log         *slog.Logger
	now         func() time.Time
	minInterval time.Duration

	runs, stepsReady, oldestStep, approvals, oldestApproval *prometheus.Desc

	mu   sync.Mutex
	at   time.Time
	last map[string][]BacklogRow
}

// NewBacklogCollector returns a collector reading through client (the app
// role's pool). minInterval of zero reads on every scrape.
func NewBacklogCollector(client *ent.Client, log *slog.Logger, minInterval time.Duration) *BacklogCollector {
	if log == nil {
		log = slog.Default()
	}
	labels := []string{"tenant_id", "workflow_id", "environment_id"}
	return &BacklogCollector{
		client: client, log: log, minInterval: minInterval,
		now: func() time.Time { return time.Now().UTC() },
		runs: prometheus.NewDesc("sluice_backlog_runs", "Runs not finished, by status (queued, running, waiting).",
			append(labels, "status"), nil),
		stepsReady: prometheus.NewDesc("sluice_backlog_steps_ready", "Steps due to start that no worker has started yet.", labels, nil),
		oldestStep: prometheus.NewDesc("sluice_backlog_oldest_ready_step_seconds",
			"How long the longest-waiting ready step has been due.", labels, nil),
		approvals: prometheus.NewDesc("sluice_backlog_approvals_open", "Approvals waiting for a decision.", labels, nil),
		oldestApproval: prometheus.NewDesc("sluice_backlog_oldest_approval_seconds",
			"How long the oldest open approval has waited.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *BacklogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.runs, c.stepsReady, c.oldestStep, c.approvals, c.oldestApproval} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BacklogCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.last == nil || now.Sub(c.at) >= c.minInterval {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rows, err := Backlog(ctx, c.client, now)
		cancel()
		if err != nil {
			c.log.Warn("backlog metrics", "err", err)
			if c.last == nil {
				return
			}
		} else {
			c.last, c.at = rows, now
		}
	}
	for tid, rows := range c.last {
		for _, r := range rows {
			l := []string{tid, r.WorkflowID, r.EnvironmentID}
			for _, st := range []struct {
				name string
				n    int64
			}{{"queued", r.RunsQueued}, {"running", r.RunsRunning}, {"waiting", r.RunsWaiting}} {
				ch <- prometheus.MustNewConstMetric(c.runs, prometheus.GaugeValue, float64(st.n), append(l, st.name)...)
			}
			ch <- prometheus.MustNewConstMetric(c.stepsReady, prometheus.GaugeValue, float64(r.StepsReady), l...)
			ch <- prometheus.MustNewConstMetric(c.approvals, prometheus.GaugeValue, float64(r.ApprovalsOpen), l...)
			ch <- prometheus.MustNewConstMetric(c.oldestStep, prometheus.GaugeValue, ageSeconds(c.at, r.OldestReadyAt), l...)
			ch <- prometheus.MustNewConstMetric(c.oldestApproval, prometheus.GaugeValue, ageSeconds(c.at, r.OldestApprovalAt), l...)
		}
	}
}

// ageSeconds is how long before now t was, or 0 without one.
func ageSeconds(now time.Time, t *time.Time) float64 {
	if t == nil || t.After(now) {
		return 0
	}
	return now.Sub(*t).Seconds()
}
