package worker

import (
	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// QueueCollector reports asynq queue depth and age on every scrape: the
// backlog an operator watches.
type QueueCollector struct {
	inspector *asynq.Inspector
	size      *prometheus.Desc
	latency   *prometheus.Desc
}

// NewQueueCollector reads queues through inspector.
func NewQueueCollector(inspector *asynq.Inspector) *QueueCollector {
	return &QueueCollector{
		inspector: inspector,
		size:      prometheus.NewDesc("sluice_queue_tasks", "Tasks in a queue by state.", []string{"queue", "state"}, nil),
		latency:   prometheus.NewDesc("sluice_queue_oldest_pending_seconds", "Age of the oldest pending task in a queue.", []string{"queue"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.size
	ch <- c.latency
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	for _, q := range []string{QueueSteps, QueueWebhooks, QueueTimers} {
		info, err := c.inspector.GetQueueInfo(q)
		if err != nil {
			continue // a queue that never held a task does not exist yet
		}
		for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled, "retry": info.Retry, "archived": info.Archived} {
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(n), q, state)
		}
		ch <- prometheus.MustNewConstMetric(c.latency, prometheus.GaugeValue, info.Latency.Seconds(), q)
	}
}
